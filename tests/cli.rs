//! The `user_machines` example, run as a process against its embedded demo stand-in.

use std::{
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Command, Output, Stdio},
    sync::OnceLock,
    time::{Duration, Instant},
};

use serde_json::Value;

/// Builds the example once per test run and returns its path.
fn binary() -> &'static PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        // This test runs from <target>/<profile>/deps/; examples live in <target>/<profile>/examples/.
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
        let mut build = Command::new(env!("CARGO"));
        build
            .args(["build", "--quiet", "--example", "user_machines"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        // The features of this test build, so that the example is not rebuilt without them.
        if cfg!(feature = "azure") {
            build.args(["--features", "azure"]);
        }
        let status = build.status().expect("running cargo build");
        assert!(
            status.success(),
            "cargo build --example user_machines failed"
        );
        let path = profile_dir
            .join("examples")
            .join(format!("user_machines{}", std::env::consts::EXE_SUFFIX));
        assert!(path.exists(), "{} was not built", path.display());
        path
    })
}

/// The example with no credentials in its environment and no proxy.
fn command(args: &[&str]) -> Command {
    let mut command = Command::new(binary());
    command.args(args).stdin(Stdio::null());
    for (name, _) in std::env::vars() {
        if name.starts_with("AZURE_")
            || name.eq_ignore_ascii_case("http_proxy")
            || name.eq_ignore_ascii_case("https_proxy")
            || name.eq_ignore_ascii_case("all_proxy")
            || name == "DEFENDER_BASE_URL"
        {
            command.env_remove(name);
        }
    }
    command
}

fn run(args: &[&str]) -> Output {
    command(args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn code(output: &Output) -> i32 {
    output.status.code().expect("exited normally")
}

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";

/// A local server standing in for Entra ID (its token endpoint for `TENANT`);
/// each test adds the API's answers.
fn entra_and_api() -> httpmock::MockServer {
    let server = httpmock::MockServer::start();
    server.mock(|when, then| {
        when.method(httpmock::Method::POST)
            .path(format!("/{TENANT}/oauth2/v2.0/token"));
        then.status(200).json_body(serde_json::json!({
            "token_type": "Bearer", "expires_in": 3599, "access_token": "cli-test-token"
        }));
    });
    server
}

/// `command` with the `AZURE_*` variables of an app of `TENANT`.
fn app(mut command: Command) -> Command {
    command
        .env("AZURE_TENANT_ID", TENANT)
        .env("AZURE_CLIENT_ID", "0b0e3a5c-1111-4a2b-9c3d-444455556666")
        .env("AZURE_CLIENT_SECRET", "cli-test-secret");
    command
}

/// `command` with the `AZURE_*` variables of an app of `TENANT`, signing in at `server`.
fn signed_in(command: Command, server: &httpmock::MockServer) -> Command {
    let mut command = app(command);
    command.env("AZURE_AUTHORITY_HOST", server.base_url());
    command
}

/// The demo's JSON output for the users of a file `name` holding `list`.
fn demo_json_from_file(name: &str, list: &str) -> Output {
    let dir = std::env::temp_dir().join(format!("user-machines-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, list).unwrap();
    let output = run(&[
        "--demo",
        "--output",
        "json",
        "--file",
        path.to_str().unwrap(),
    ]);
    std::fs::remove_file(&path).ok();
    output
}

/// The `user` of each entry of the JSON output, in order.
fn json_users(output: &Output) -> Vec<String> {
    let json: Value = serde_json::from_slice(&output.stdout).expect("valid JSON");
    json.as_array()
        .expect("an array")
        .iter()
        .map(|e| e["user"].as_str().expect("a user").to_owned())
        .collect()
}

/// Splits one CSV record (RFC 4180 quoting).
fn csv_fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                fields.last_mut().unwrap().push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => fields.push(String::new()),
            (c, _) => fields.last_mut().unwrap().push(c),
        }
    }
    fields
}

/// The demo reads neither `DEFENDER_BASE_URL` nor the credential variables: a
/// shell set up for the real API still runs it on the stand-in.
#[test]
fn the_demo_ignores_the_environment_of_the_real_api() {
    let output = command(&["--demo", "user1@contoso.com"])
        .env(
            "DEFENDER_BASE_URL",
            "https://api.security.microsoft.com/api",
        )
        .env("AZURE_TENANT_ID", "not a tenant")
        .env("AZURE_CLIENT_ID", "not a client")
        .env("AZURE_CLIENT_SECRET", "")
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(code(&output), 0, "{stderr}");
    assert!(text(&output.stdout).contains("device1.corp.example.com"));
}

#[test]
fn demo_prints_the_seed_machines_as_a_table() {
    let output = run(&["--demo", "user1@contoso.com"]);
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(code(&output), 0, "{stderr}");
    for expected in [
        "device1.corp.example.com",
        "device2.corp.example.com",
        "Windows10 19045",
        "Windows11 22000",
        "Active",
        "Inactive",
        "2024-01-02 00:00",
        "10.0.0.10",
        "laptop, finance",
    ] {
        assert!(
            stdout.contains(expected),
            "{expected:?} missing from\n{stdout}"
        );
    }
    for line in stdout.lines() {
        assert!(
            line.chars().count() <= 100,
            "wider than 100 columns: {line:?}"
        );
    }
    // Risk and exposure, in their columns; the last seen time, absolute and relative.
    let rows: Vec<&str> = stdout.lines().filter(|l| l.contains("device")).collect();
    let words = |line: &str| {
        line.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(words(rows[0])[4..], ["Active", "Low", "Medium"], "{stdout}");
    assert_eq!(
        words(rows[1])[4..],
        ["Inactive", "Medium", "Low"],
        "{stdout}"
    );
    let seen = stdout
        .lines()
        .find(|l| l.contains("2024-01-02 00:00"))
        .unwrap();
    assert!(seen.contains("y ago)"), "{seen}");
    assert!(
        stderr.contains("1 user, 2 machines, 0 failed"),
        "summary: {stderr}"
    );
    assert!(stderr.contains("throttling"), "summary: {stderr}");
    // The summary gives the time taken, in seconds.
    let time = stderr
        .split(", ")
        .find(|part| part.ends_with(" s"))
        .unwrap_or_else(|| panic!("no time in {stderr}"));
    assert!(time.trim_end_matches(" s").parse::<f64>().is_ok(), "{time}");
}

#[test]
fn json_output_is_one_array_of_users() {
    let output = run(&[
        "--demo",
        "--output",
        "json",
        "user1@contoso.com",
        "CONTOSO\\alice",
        "bob",
    ]);
    assert_eq!(code(&output), 0, "{}", text(&output.stderr));
    let json: Value = serde_json::from_slice(&output.stdout).expect("valid JSON");
    let entries = json.as_array().expect("an array");
    assert_eq!(
        json_users(&output),
        ["user1@contoso.com", "CONTOSO\\alice", "bob"]
    );
    let seed = &entries[0]["machines"];
    assert_eq!(seed[0]["id"], "machine-1");
    assert_eq!(seed[1]["id"], "machine-2");
    assert_eq!(seed[0]["rbacGroupId"], "group-fin-001");
    for entry in entries {
        assert!(entry["machines"].is_array(), "{entry}");
        assert!(entry.get("error").is_none(), "{entry}");
    }
}

#[test]
fn csv_output_has_a_header_and_equal_records() {
    let output = run(&[
        "--demo",
        "--output=csv",
        "user1@contoso.com",
        "carol",
        "dave",
        "not/valid",
    ]);
    assert_eq!(code(&output), 1, "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    let records: Vec<Vec<String>> = stdout.lines().map(csv_fields).collect();
    let header = &records[0];
    assert_eq!(header[0], "user");
    assert_eq!(header.last().unwrap(), "error");
    for record in &records {
        assert_eq!(record.len(), header.len(), "{record:?}");
    }
    let seed: Vec<_> = records
        .iter()
        .filter(|r| r[0] == "user1@contoso.com")
        .collect();
    assert_eq!(seed.len(), 2);
    assert_eq!(seed[0][1], "machine-1");
    assert_eq!(seed[0][2], "device1.corp.example.com");
    // Every input has at least one record; the invalid one carries its reason.
    for user in ["carol", "dave", "not/valid"] {
        assert!(records.iter().any(|r| r[0] == user), "{user} missing");
    }
    let invalid = records.iter().find(|r| r[0] == "not/valid").unwrap();
    assert!(
        invalid.last().unwrap().contains("invalid user name"),
        "{invalid:?}"
    );
}

#[test]
fn a_batch_with_failures_exits_1_and_prints_the_others() {
    let output = run(&["--demo", "user1@contoso.com", "bad/name", "blocked", "bob"]);
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(code(&output), 1, "{stderr}");
    assert!(stdout.contains("device1.corp.example.com"), "{stdout}");
    assert!(stdout.contains("bob"), "{stdout}");
    assert!(
        stderr.contains("failed: bad/name: invalid user name"),
        "{stderr}"
    );
    // Defender's tracking id is part of the reason.
    assert!(
        stderr.contains("failed: blocked: ")
            && stderr.contains("403")
            && stderr.contains("43f4cb08-8fac-4b65-9ecc-2d9a8b1ab8a4"),
        "{stderr}"
    );
    assert!(stderr.contains("4 users"), "{stderr}");
    assert!(stderr.contains("2 failed"), "{stderr}");
}

#[test]
fn users_come_from_a_file_or_standard_input() {
    let list = "# incident 4711\n\nuser1@contoso.com\n   \n  CONTOSO\\alice  \n# done\n";
    let from_file = demo_json_from_file("users.txt", list);
    assert_eq!(code(&from_file), 0, "{}", text(&from_file.stderr));

    let mut child = command(&["--demo", "--output", "json", "--file", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(list.as_bytes())
        .unwrap();
    let from_stdin = child.wait_with_output().unwrap();
    assert_eq!(code(&from_stdin), 0, "{}", text(&from_stdin.stderr));

    for output in [&from_file, &from_stdin] {
        assert_eq!(json_users(output), ["user1@contoso.com", "CONTOSO\\alice"]);
    }
}

/// Notepad and other editors start a UTF-8 file with a byte-order mark: it is not
/// part of the first line's user name or comment.
#[test]
fn a_byte_order_mark_at_the_start_of_the_file_is_ignored() {
    for (name, list) in [
        (
            "comment.txt",
            "\u{FEFF}# incident 4711\r\nuser1@contoso.com\r\n",
        ),
        ("user.txt", "\u{FEFF}user1@contoso.com\r\n"),
    ] {
        let output = demo_json_from_file(name, list);
        assert_eq!(code(&output), 0, "{name}: {}", text(&output.stderr));
        assert_eq!(json_users(&output), ["user1@contoso.com"], "{name}");
    }
    // Files joined with `cat` keep a mark on a later line too.
    let output = demo_json_from_file("joined.txt", "user1@contoso.com\n\u{FEFF}bob\n");
    assert_quietly_found(&output, &["user1@contoso.com", "bob"]);
}

/// The run succeeded for `users`, in that order, and warned of nothing.
fn assert_quietly_found(output: &Output, users: &[&str]) {
    assert_eq!(code(output), 0, "{}", text(&output.stderr));
    assert_eq!(json_users(output), users);
    assert!(
        !text(&output.stderr).contains("warning"),
        "{}",
        text(&output.stderr)
    );
}

/// Lines ended by a carriage return alone (old Mac files) are lines; a `#`
/// after white space stays part of the name, with a warning that it is not a
/// comment.
#[test]
fn carriage_returns_end_lines_and_a_late_hash_is_flagged() {
    let output = demo_json_from_file("mac.txt", "user1@contoso.com\rbob\r\r# note\r");
    assert_quietly_found(&output, &["user1@contoso.com", "bob"]);
    // Warnings count the lines a carriage return ends, and a CRLF ends one.
    let output = demo_json_from_file("lines.txt", "user1\rbob # x\r\nalice  #y\r");
    let stderr = text(&output.stderr);
    assert!(stderr.contains("--file line 2: bob # x:"), "{stderr}");
    assert!(stderr.contains("--file line 3: alice  #y:"), "{stderr}");

    let output = demo_json_from_file("noted.txt", "user1@contoso.com\nbob   # ticket 4711\nx#1\n");
    assert_eq!(
        json_users(&output),
        ["user1@contoso.com", "bob   # ticket 4711", "x#1"]
    );
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains("warning: --file line 2: bob   # ticket 4711: a '#' after white space"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("warning").count(), 1, "{stderr}");
}

/// A file that is not UTF-8 (Windows PowerShell's `>` writes UTF-16) is a usage
/// error that says so.
#[test]
fn a_file_that_is_not_utf8_is_refused_with_a_hint() {
    let dir = std::env::temp_dir().join(format!("user-machines-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("utf16.txt");
    let utf16: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain("user1\r\n".encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    std::fs::write(&path, utf16).unwrap();
    let output = run(&["--demo", "--file", path.to_str().unwrap()]);
    std::fs::remove_file(&path).ok();
    assert_eq!(code(&output), 2);
    assert!(
        text(&output.stderr).contains("it must be UTF-8"),
        "{}",
        text(&output.stderr)
    );
}

/// An argument that is not UTF-8 is a usage error: it is not looked up with
/// its bytes replaced (`user1\u{FFFD}`), which would be another user.
#[cfg(unix)]
#[test]
fn an_argument_that_is_not_utf8_is_refused() {
    use std::os::unix::ffi::OsStrExt;
    let name = std::ffi::OsStr::from_bytes(b"user1\xff");
    let output = command(&["--demo", "--output", "json"])
        .arg(name)
        .output()
        .unwrap();
    assert_eq!(code(&output), 2);
    assert!(output.stdout.is_empty(), "{}", text(&output.stdout));
    assert!(
        text(&output.stderr).contains("argument 4 is not valid UTF-8"),
        "{}",
        text(&output.stderr)
    );
}

/// What a caller typed is shown escaped in a usage error: an option, a path.
#[test]
fn usage_errors_do_not_pass_on_terminal_sequences() {
    for args in [
        &["--\u{1b}]0;pwned\u{7}\u{1b}[2J"][..],
        &["--demo", "--file", "/nonexistent/\u{1b}[31mRED"],
        &["--base-url"],
    ] {
        let output = run(args);
        assert_eq!(code(&output), 2);
        let stderr = text(&output.stderr);
        assert!(stderr.starts_with("error: "), "{stderr}");
        assert!(
            !stderr.contains('\u{1b}') && !stderr.contains('\u{7}'),
            "{stderr:?}"
        );
    }
    let stderr = text(&run(&["--\u{1b}[2J"]).stderr);
    assert!(stderr.contains("unknown option --\\u{1b}[2J"), "{stderr}");
}

/// Wide characters (CJK, emoji) take two columns: the table still fits 100
/// columns, and its columns stay under their headings.
#[test]
fn wide_characters_keep_the_table_in_its_columns() {
    let server = entra_and_api();
    server.mock(|when, then| {
        when.path("/api/users/user1/machines");
        then.status(200).json_body(serde_json::json!({"value": [{
            "id": "m1",
            "computerDnsName": "\u{4e2d}\u{6587}".repeat(10),
            "osPlatform": "\u{4e2d}\u{6587}".repeat(8),
            "healthStatus": "Active",
            "riskScore": "Low",
            "exposureLevel": "High",
            "machineTags": ["\u{1f600}".repeat(60)]
        }, {
            // A heart with its emoji presentation selector: two columns a pair.
            "id": "m2",
            "computerDnsName": "\u{2764}\u{fe0f}".repeat(20),
            "osPlatform": "Windows11",
            "healthStatus": "Active"
        }]}));
    });
    let args = ["--base-url", &server.base_url(), "user1"];
    let output = signed_in(command(&args), &server).output().unwrap();
    let stdout = text(&output.stdout);
    assert_eq!(code(&output), 0, "{}", text(&output.stderr));
    let columns = unicode_width::UnicodeWidthStr::width;
    for line in stdout.lines() {
        assert!(columns(line) <= 100, "{} columns: {line}", columns(line));
    }
    let header = stdout.lines().next().unwrap();
    // HEALTH starts at the same column in the heading and in the rows.
    let at = |line: &str, word: &str| columns(&line[..line.find(word).unwrap()]);
    for wide in ['\u{4e2d}', '\u{2764}'] {
        let row = stdout.lines().find(|l| l.contains(wide)).unwrap();
        assert_eq!(at(header, "HEALTH"), at(row, "Active"), "{stdout}");
    }
}

/// A variable the program reads, set to a value that is not UTF-8, is a usage
/// error: `DEFENDER_BASE_URL` taken as unset would send the lookups to the real
/// API.
#[cfg(unix)]
#[test]
fn an_environment_variable_that_is_not_utf8_is_refused() {
    use std::os::unix::ffi::OsStrExt;
    let bad = std::ffi::OsStr::from_bytes(b"http://127.0.0.1:1/\xff");
    for name in ["DEFENDER_BASE_URL", "AZURE_TENANT_ID"] {
        let output = command(&["user1"]).env(name, bad).output().unwrap();
        assert_eq!(code(&output), 2, "{name}");
        assert!(
            text(&output.stderr).contains(&format!("{name} is set, but not to valid UTF-8")),
            "{name}: {}",
            text(&output.stderr)
        );
        // The demo reads neither.
        let output = command(&["--demo", "user1"])
            .env(name, bad)
            .output()
            .unwrap();
        assert_eq!(code(&output), 0, "{name}: {}", text(&output.stderr));
    }
}

/// An option with a value given twice is a usage error: the second would
/// quietly replace the first (a whole list of users).
#[test]
fn an_option_given_twice_is_refused() {
    for args in [
        &["--demo", "--file", "a.txt", "--file", "b.txt"][..],
        &["--demo", "--output", "json", "--output=csv", "user1"],
        &[
            "--demo",
            "--concurrency",
            "2",
            "--concurrency",
            "3",
            "user1",
        ],
    ] {
        let output = run(args);
        assert_eq!(code(&output), 2, "{args:?}");
        assert!(output.stdout.is_empty());
        assert!(
            text(&output.stderr).contains("is given twice"),
            "{}",
            text(&output.stderr)
        );
    }
}

/// A name the rule keeps but Defender is unlikely to know gets a warning
/// before the lookups, with the name escaped.
#[test]
fn odd_user_names_get_a_warning() {
    let output = run(&[
        "--demo",
        "user1 @contoso.com",
        "\u{feff}bob",
        "user1@contoso.com",
    ]);
    let stderr = text(&output.stderr);
    assert_eq!(code(&output), 0, "{stderr}");
    assert!(
        stderr
            .contains("warning: user1 @contoso.com: the user name begins or ends with white space"),
        "{stderr}"
    );
    assert!(stderr.contains(r"warning: \u{feff}bob: "), "{stderr}");
    assert_eq!(stderr.matches("warning:").count(), 2, "{stderr}");
}

/// A credential the token endpoint refuses ends the run at once, exit 2: the
/// other lookups would fail the same way, each a failed sign-in.
#[test]
fn a_refused_credential_stops_the_run() {
    let server = httpmock::MockServer::start();
    let token = server.mock(|when, then| {
        when.method(httpmock::Method::POST)
            .path(format!("/{TENANT}/oauth2/v2.0/token"));
        then.status(401).json_body(serde_json::json!({
            "error": "invalid_client",
            "error_description": "AADSTS7000215: Invalid client secret provided."
        }));
    });
    let users: Vec<String> = (0..20).map(|i| format!("user{i}")).collect();
    let mut args = vec!["--concurrency", "2", "--base-url"];
    let base = server.base_url();
    args.push(&base);
    args.extend(users.iter().map(String::as_str));
    let output = signed_in(command(&args), &server).output().unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(code(&output), 2, "{stderr}");
    assert!(stderr.contains("AADSTS7000215"), "{stderr}");
    assert!(stderr.contains("no more users are looked up"), "{stderr}");
    assert!(!stderr.contains("cli-test-secret"), "{stderr}");
    assert!(token.calls() <= 2, "{} token requests", token.calls());
}

#[test]
fn missing_credentials_exit_2_naming_the_variables() {
    let output = run(&["user1@contoso.com"]);
    let stderr = text(&output.stderr);
    assert_eq!(code(&output), 2, "{stderr}");
    for variable in ["AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET"] {
        assert!(
            stderr.contains(variable),
            "{variable} not named in {stderr}"
        );
    }
    assert!(output.stdout.is_empty());

    // A malformed tenant id is a configuration error too, said once, not a failed
    // lookup for every user.
    let output = command(&["u1", "u2"])
        .env("AZURE_TENANT_ID", "bad tenant/..")
        .env("AZURE_CLIENT_ID", "c")
        .env("AZURE_CLIENT_SECRET", "s")
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(code(&output), 2, "{stderr}");
    assert_eq!(stderr.matches("invalid tenant id").count(), 1, "{stderr}");
}

/// A lookup of `user1` at `base`, with the `AZURE_*` variables of an app of `TENANT`.
fn with_base_url(base: &str) -> Output {
    app(command(&["--base-url", base, "user1"]))
        .output()
        .unwrap()
}

/// A path or a port on the API's own host is a usage error naming the URL to give.
#[test]
fn a_base_url_with_a_path_on_the_apis_host_is_refused() {
    for (base, what) in [
        ("https://api.security.microsoft.com/api", "a path (/api)"),
        (
            "https://eu.api.security.microsoft.com:8443",
            "a port (8443)",
        ),
    ] {
        let output = with_base_url(base);
        let stderr = text(&output.stderr);
        assert_eq!(code(&output), 2, "{stderr}");
        assert!(stderr.contains(what), "{stderr}");
        assert!(
            stderr.contains("serves the Defender API at its root"),
            "{stderr}"
        );
        assert!(output.stdout.is_empty());
    }
}

#[test]
fn a_base_url_of_another_clouds_api_names_the_option_that_fixes_it() {
    let output = with_base_url("https://api-gov.securitycenter.microsoft.us");
    let stderr = text(&output.stderr);
    assert_eq!(code(&output), 2, "{stderr}");
    assert!(stderr.contains("another cloud"), "{stderr}");
    assert!(
        stderr.contains("hint: --base-url only says where calls go; --cloud"),
        "{stderr}"
    );
    assert!(!stderr.contains("cli-test-secret"), "{stderr}");
    assert!(output.stdout.is_empty());
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["--demo", "--output", "xml", "user1"][..],
        &["--demo", "--bogus", "user1"],
        &["--demo", "--concurrency", "many", "user1"],
        &["--demo", "--file"],
        &["--demo"],
        &["--cloud", "mars", "user1"],
        &["--demo", "--file", "/nonexistent/users.txt"],
        // Short options that do not exist are not user names.
        &["--demo", "-o", "json", "user1"],
        &["--demo", "-v", "user1"],
        // The demo has its own server and cloud.
        &["--demo", "--base-url", "https://proxy.example", "user1"],
        &["--demo", "--cloud", "eu", "user1"],
    ] {
        let output = run(args);
        assert_eq!(code(&output), 2, "{args:?}: {}", text(&output.stderr));
        assert!(
            text(&output.stderr).starts_with("error: "),
            "{args:?}: {}",
            text(&output.stderr)
        );
        // A mistake in the options points to --help; a file that cannot be
        // read is not one.
        let hint = text(&output.stderr).contains("--help");
        assert_eq!(
            hint,
            !args.contains(&"/nonexistent/users.txt"),
            "{args:?}: {}",
            text(&output.stderr)
        );
    }
}

#[test]
fn help_lists_the_options() {
    let output = run(&["--help"]);
    assert_eq!(code(&output), 0);
    let help = text(&output.stdout);
    for option in [
        "--file",
        "--output",
        "--cloud",
        "--base-url",
        "DEFENDER_BASE_URL",
        "--concurrency",
        "--demo",
        "AZURE_TENANT_ID",
    ] {
        assert!(help.contains(option), "{option} missing from --help");
    }
    // The help shows its examples escaped, like the values it describes.
    assert!(
        !help
            .chars()
            .any(|c| (c.is_control() && c != '\n') || ('\u{200B}'..='\u{206F}').contains(&c)),
        "{help:?}"
    );
    assert!(help.contains(r"(\u{202e})"), "{help}");
}

/// Ctrl-C stops the batch, prints what was done and exits 130.
#[cfg(unix)]
#[test]
fn ctrl_c_stops_cleanly() {
    // Many users, one at a time; some answers are 429 with Retry-After: 1,
    // so the batch takes far longer than the test waits.
    let users: Vec<String> = (0..60).map(|i| format!("person{i}")).collect();
    let mut args = vec!["--demo", "--concurrency", "1", "--output", "csv"];
    args.extend(users.iter().map(String::as_str));
    let mut child = command(&args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    // Wait for the header and a first record: the signal handler is in place by then.
    let mut header = String::new();
    stdout.read_line(&mut header).unwrap();
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(header.starts_with("user,"), "{header:?}");

    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());

    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().ok();
            panic!("the program did not stop after Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();

    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(stderr.contains("of 60 users"), "{stderr}");
    // What was printed is complete records only.
    for line in first.lines().chain(rest.lines()) {
        assert_eq!(csv_fields(line).len(), 12, "{line:?}");
    }
}

/// The summary counts the 429 answers waited out and sums the waits over
/// calls, which says why those seconds can exceed the run's time.
#[test]
fn the_summary_says_what_its_throttling_figures_count() {
    let users = [
        "person0", "person1", "person2", "person3", "person4", "person5",
    ];
    let mut args = vec!["--demo", "--concurrency", "4", "--output", "csv"];
    args.extend(users);
    let output = run(&args);
    let stderr = text(&output.stderr);
    assert_eq!(code(&output), 0, "{stderr}");
    assert!(stderr.contains("6 users"), "{stderr}");
    let part = stderr
        .split(", ")
        .find(|part| part.contains("waited out"))
        .unwrap_or_else(|| panic!("no throttling figures in {stderr}"));
    // One of these users' first request is answered 429 by the demo (always
    // the same one: the demo picks them by a hash of the name).
    assert_eq!(part, "1 429 answer waited out", "{stderr}");
    assert!(
        stderr.contains("s of throttling waits summed over calls"),
        "{stderr}"
    );
}

#[test]
fn a_name_starting_with_a_dash_is_looked_up_after_double_dash() {
    let output = run(&["--demo", "--output", "json", "--", "-svc-backup"]);
    assert_eq!(code(&output), 0, "{}", text(&output.stderr));
    let json: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json[0]["user"], "-svc-backup");
}

#[test]
fn an_output_that_cannot_be_written_is_an_error() {
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let output = command(&["--demo", "user1@contoso.com"])
        .stdout(full)
        .output()
        .unwrap();
    assert_eq!(code(&output), 1, "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("cannot write the output"),
        "{}",
        text(&output.stderr)
    );
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let output = command(&["--help"]).stdout(full).output().unwrap();
    assert_eq!(code(&output), 1, "{}", text(&output.stderr));
    assert!(text(&output.stderr).contains("cannot write the output"));

    // A standard error that cannot be written does not make the program panic.
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let output = command(&["--demo", "user1@contoso.com"])
        .stderr(full)
        .output()
        .unwrap();
    assert_eq!(code(&output), 0);
    assert!(
        text(&output.stdout).contains("device1"),
        "{}",
        text(&output.stdout)
    );
}

/// Machine fields come from devices and from whoever manages them: in CSV they
/// cannot become spreadsheet formulas, and in the table they cannot move the
/// cursor, clear the screen or start a line of their own.
#[test]
fn hostile_values_cannot_inject_formulas_or_terminal_sequences() {
    let server = entra_and_api();
    server.mock(|when, then| {
        when.path("/api/users/user1/machines");
        then.status(200).json_body(serde_json::json!({"value": [{
            "id": "=cmd|' /C calc'!A0",
            "computerDnsName": "evil\u{1b}[2J\u{1b}[31m,\"name\"\nuser2@contoso.com  spoofed",
            "osPlatform": "@SUM(1+1)",
            "lastIpAddress": "10.0.0.1\r\nspoofed-line",
            "machineTags": ["=HYPERLINK(\"http://x\")", "-2+3"],
            "healthStatus": "\u{202e}evitcA"
        }, {
            // A Persian name spelled with a zero-width non-joiner: shown as it is.
            "id": "m2",
            "computerDnsName": "\u{645}\u{6cc}\u{200c}\u{62e}\u{648}\u{627}\u{647}\u{645}-pc"
        }, {
            // Tags holding the separator and the escape.
            "id": "m3",
            "computerDnsName": "pc\u{61c}3\u{2028}x\u{ad}",
            "machineTags": ["a;b", "c\\d", "e"]
        }, {
            // A formula after a `;`, where `;` separates a spreadsheet's fields.
            "id": "m4",
            "computerDnsName": "pc;=1+1"
        }]}));
    });
    let run_with = |format: &str| {
        let args = [
            "--output",
            format,
            "--base-url",
            &server.base_url(),
            "user1",
        ];
        signed_in(command(&args), &server).output().unwrap()
    };

    let csv = run_with("csv");
    assert_eq!(code(&csv), 0, "{}", text(&csv.stderr));
    let csv_text = text(&csv.stdout);
    // The header, the record of the hostile machine (with line breaks inside its
    // quoted fields) and the record of the second machine.
    let records = csv_text.split_once("\r\n").unwrap().1;
    let (records, fourth) = records.split_at(records.rfind("user1,m4,").unwrap());
    assert!(fourth.starts_with("user1,m4,\"pc;=1+1\","), "{fourth}");
    let (records, third) = records.split_at(records.rfind("user1,m3,").unwrap());
    assert!(third.contains(r#","a\;b;c\\d;e","#), "{third}");
    let third = csv_fields(third.strip_suffix("\r\n").unwrap());
    assert_eq!(third[10], r"a\;b;c\\d;e", "{third:?}");
    let (record, second) = records.split_at(records.rfind("user1,m2,").unwrap());
    // A machine with only an id and a name: every other cell is empty.
    let second = csv_fields(second.strip_suffix("\r\n").unwrap());
    assert_eq!(second.len(), 12, "{second:?}");
    assert!(second[3..].iter().all(String::is_empty), "{second:?}");
    let fields = csv_fields(record.strip_suffix("\r\n").unwrap());
    assert_eq!(fields.len(), 12, "{fields:?}");
    assert_eq!(fields[1], "'=cmd|' /C calc'!A0");
    assert_eq!(fields[3], "'@SUM(1+1)");
    assert_eq!(fields[10], "'=HYPERLINK(\"http://x\");-2+3");
    assert!(fields[2].starts_with("evil"), "{fields:?}");

    let table = run_with("table");
    assert_eq!(code(&table), 0, "{}", text(&table.stderr));
    let shown = text(&table.stdout);
    assert!(
        !shown.contains(['\u{1b}', '\r', '\u{202e}', '\u{61c}', '\u{2028}', '\u{ad}']),
        "{shown:?}"
    );
    assert!(shown.contains(r"pc\u{61c}3\u{2028}x\u{ad}"), "{shown}");
    for line in shown.lines() {
        assert!(
            !line.starts_with("user2") && !line.starts_with("spoofed"),
            "{shown}"
        );
    }
    assert!(shown.contains(r"\u{1b}[2J"), "{shown}");
    assert!(
        shown.contains("\u{645}\u{6cc}\u{200c}\u{62e}\u{648}\u{627}\u{647}\u{645}-pc"),
        "{shown}"
    );
}

/// The failure lines on standard error show the input and the service's texts
/// escaped, like the table's values: neither can retitle or redraw the terminal.
#[test]
fn failure_lines_cannot_drive_the_terminal() {
    let server = entra_and_api();
    server.mock(|when, then| {
        when.path("/api/users/user1/machines");
        then.status(403).json_body(serde_json::json!({"error": {
            "code": "Forbidden",
            "message": "no\u{1b}[2J\u{1b}]0;pwned\u{7}",
            "target": "t-1"
        }}));
    });
    server.mock(|when, then| {
        when.path("/api/users/user2/machines");
        then.status(403).json_body(serde_json::json!({"error": {
            "code": "Forbidden", "message": "tab\there", "target": "t-2"
        }}));
    });
    let args = [
        "--base-url",
        &server.base_url(),
        "user1",
        "a\u{1b}]0;pwned\u{7}",
        r"CONTOSO\user2",
    ];
    let output = signed_in(command(&args), &server).output().unwrap();
    assert_eq!(code(&output), 1, "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    assert!(!stderr.contains(['\u{1b}', '\u{7}', '\t']), "{stderr:?}");
    assert!(stderr.contains(r"no\u{1b}[2J"), "{stderr}");
    assert!(stderr.contains(r"a\u{1b}]0;pwned"), "{stderr}");
    // Each part escaped once: the input as typed, the service's text escaped.
    assert!(stderr.contains(r"failed: CONTOSO\user2: "), "{stderr}");
    assert!(stderr.contains(r"tab\there"), "{stderr}");
}

/// `DEFENDER_BASE_URL` points the program at another API base (a proxy, say),
/// like `--base-url`; and a batch keeps to `--concurrency` (4 by default).
#[test]
fn the_base_url_comes_from_the_environment_and_the_batch_keeps_its_concurrency() {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    };
    let server = entra_and_api();
    let (in_flight, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (arrive, top, leave) = (in_flight.clone(), peak.clone(), in_flight);
    server.mock(move |when, then| {
        when.path_prefix("/api/users/").is_true(move |_| {
            let now = arrive.fetch_add(1, Ordering::SeqCst) + 1;
            top.fetch_max(now, Ordering::SeqCst);
            true
        });
        then.delay(Duration::from_millis(200))
            .respond_with(move |_| {
                leave.fetch_sub(1, Ordering::SeqCst);
                httpmock::HttpMockResponse::builder()
                    .status(200)
                    .body(r#"{"value":[]}"#)
                    .build()
            });
    });
    let users: Vec<String> = (0..10).map(|i| format!("user{i}")).collect();
    let mut args = vec!["--output", "json"];
    args.extend(users.iter().map(String::as_str));
    let output = signed_in(command(&args), &server)
        .env("DEFENDER_BASE_URL", server.base_url())
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "{}", text(&output.stderr));
    assert_eq!(json_users(&output), users);
    assert_eq!(peak.load(Ordering::SeqCst), 4);
}

/// A reader that goes away (`| head`) ends the run quietly: not an error.
#[test]
fn a_closed_pipe_ends_the_run_quietly() {
    // One lookup, printed for each of 5,000 inputs: far more than a pipe holds.
    let dir = std::env::temp_dir().join(format!("user-machines-pipe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("users.txt");
    std::fs::write(&path, "user1@contoso.com\n".repeat(5_000)).unwrap();
    let output = with_stdout_closed(&["--demo", "--file", path.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).ok();
    let stderr = text(&output.stderr);
    assert_eq!(code(&output), 0, "{stderr}");
    assert!(!stderr.contains("cannot write"), "{stderr}");

    // The help too (`--help | head -1`): the pipe is closed before anything is written.
    let output = with_stdout_closed(&["--help"]);
    assert_eq!(code(&output), 0, "{}", text(&output.stderr));
    assert_eq!(text(&output.stderr), "");
}

/// Runs the program with `args` and a standard output nobody reads: the pipe is
/// closed as soon as the program starts.
fn with_stdout_closed(args: &[&str]) -> std::process::Output {
    let mut child = command(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}
