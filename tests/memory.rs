//! What a call holds in memory, counted by this test binary's allocator.

mod common;

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use common::{builder, quick_retries};
use defender_endpoint::Error;
use httpmock::MockServer;

/// The system allocator, counting the bytes in use.
struct Counting;

static IN_USE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        IN_USE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// The body of an error answer is not held while the call waits to try again:
/// the error quotes only its start.
#[tokio::test]
async fn an_error_body_is_not_held_through_the_wait_before_a_retry() {
    const BODY: usize = 8 * 1024 * 1024;
    let server = MockServer::start_async().await;
    let unavailable = server
        .mock_async(|when, then| {
            when.path("/api/users/user1/machines");
            then.status(503)
                .header("retry-after", "2")
                .body("x".repeat(BODY));
        })
        .await;
    let client = builder(&server).retry(quick_retries(2)).build().unwrap();
    let before = IN_USE.load(Ordering::Relaxed);
    let call = tokio::spawn(async move { client.user_machines("user1").await });
    // The first answer has come and the call waits the two seconds it asked for.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let held = IN_USE.load(Ordering::Relaxed).saturating_sub(before);
    assert!(held < BODY / 4, "{held} bytes held while waiting");
    let err = call.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::Api { status: 503, .. }), "{err:?}");
    unavailable.assert_calls_async(2).await;
}
