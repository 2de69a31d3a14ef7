//! The machines of one user or thousands, from Microsoft Defender for Endpoint.
//!
//! ```text
//! cargo run --example user_machines -- --demo user1@contoso.com
//! cargo run --example user_machines -- --file users.txt --output csv > machines.csv
//! ```
//!
//! Run with `--help` for the options. Exit codes: 0 when every lookup
//! succeeded, 1 when some failed, 2 for a usage or configuration error (a
//! credential the token endpoint refuses included), 130
//! when interrupted with Ctrl-C.

#[path = "user_machines/demo.rs"]
mod demo;

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    io::{self, BufRead, IsTerminal, Write},
    process::ExitCode,
    time::{Duration, Instant},
};
use unicode_width::UnicodeWidthStr;

use chrono::{DateTime, Utc};
use defender_endpoint::{
    types::Machine, Client, ClientSecretCredential, Cloud, EnvironmentCredential, Error,
    ParseCloudError, UserName,
};
use futures_util::StreamExt;
use serde::Serialize;
use serde_json::{json, Value};

const HELP: &str = "\
Look up the machines of users in Microsoft Defender for Endpoint.

Usage: user_machines [OPTIONS] [USER]...

Arguments:
  [USER]...  User names: user1@contoso.com, CONTOSO\\user1 or user1

Options:
      --file PATH          Read users from PATH, one per line ('-' = standard input);
                           blank lines and lines starting with '#' are skipped
      --output FORMAT      table, json or csv [default: table]
      --cloud NAME         commercial, us, eu, uk, au, swa, ina, aea, gcc, gcc-high, dod
                           [default: commercial]
      --base-url URL       The API base URL (overrides the cloud's) [env: DEFENDER_BASE_URL]
      --concurrency N      Lookups in flight at once [default: 4]
                           (each option with a value may be given once)
      --demo               Run against an embedded local stand-in of the API (no
                           credentials, no network; not with --cloud or --base-url)
  -h, --help               Print this help
      --                   Everything after it is a user name, even if it starts with '-'

Credentials come from the environment:
  AZURE_TENANT_ID          the Microsoft Entra tenant (directory) id
  AZURE_CLIENT_ID          the application (client) id
  AZURE_CLIENT_SECRET      its client secret, or
  AZURE_CLIENT_CERTIFICATE_PATH  a PEM file with its certificate and private key
  AZURE_AUTHORITY_HOST     the sign-in authority (optional; the cloud's by default)
The application needs the Machine.Read.All permission of WindowsDefenderATP.

In CSV, a cell that a spreadsheet would take for a formula (one starting with
=, +, -, @, a tab or a carriage return) gets a leading ', and a machine's tags
are joined with ; (a ; or \\ inside a tag escaped with a \\). In the table, control
and invisible characters in the API's values are shown escaped (\\u{202e}).

Exit status: 0 all lookups succeeded, 1 some failed or the output could not be
written, 2 usage or configuration error (a refused credential stops the run),
130 interrupted (Ctrl-C).
";

/// The environment variables credentials come from.
const CREDENTIAL_VARIABLES: &str = "AZURE_TENANT_ID, AZURE_CLIENT_ID and AZURE_CLIENT_SECRET \
(or AZURE_CLIENT_CERTIFICATE_PATH), optionally AZURE_AUTHORITY_HOST";

/// The widest the table gets.
const TABLE_WIDTH: usize = 100;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Table,
    Json,
    Csv,
}

#[derive(Debug)]
struct Options {
    users: Vec<String>,
    file: Option<String>,
    format: Format,
    /// `--cloud`'s, if given.
    cloud: Option<Cloud>,
    base_url: Option<String>,
    concurrency: usize,
    demo: bool,
}

/// A usage or configuration error: exit 2.
struct Usage(String);

/// `eprintln!` that does not panic when standard error is closed or full.
macro_rules! say {
    ($($arg:tt)*) => {{
        let _ = writeln!(io::stderr(), $($arg)*);
    }};
}

fn main() -> ExitCode {
    // An argument that is not UTF-8 is refused, not looked up with its bytes replaced.
    let args = std::env::args_os()
        .skip(1)
        .enumerate()
        .map(|(i, arg)| {
            arg.into_string().map_err(|arg| {
                Usage(format!(
                    "argument {} is not valid UTF-8: {}",
                    i + 1,
                    clip(&arg.to_string_lossy(), 200)
                ))
            })
        })
        .collect::<Result<Vec<_>, _>>();
    let options = match args.and_then(parse_args) {
        Ok(Some(options)) => options,
        Ok(None) => {
            // A closed pipe (`--help | head -1`) ends the run quietly, as a lookup's does.
            return match io::stdout().write_all(HELP.as_bytes()) {
                Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
                    say!("error: cannot write the output: {e}");
                    ExitCode::from(1)
                }
                _ => ExitCode::SUCCESS,
            };
        }
        Err(Usage(message)) => {
            say!(
                "error: {}\n\nFor more information, try '--help'.",
                printable(&message)
            );
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            say!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(options)) {
        Ok(code) => code,
        Err(Usage(message)) => {
            say!("error: {}", printable(&message));
            ExitCode::from(2)
        }
    }
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<Options>, Usage> {
    let mut options = Options {
        users: Vec::new(),
        file: None,
        format: Format::Table,
        cloud: None,
        base_url: None,
        concurrency: 4,
        demo: false,
    };
    let mut cloud_name = None;
    let mut args = args.into_iter();
    let mut only_users = false;
    let mut seen = std::collections::HashSet::new();
    while let Some(arg) = args.next() {
        // Anything starting with '-' (but '-' itself) is an option until `--`.
        if only_users || !arg.starts_with('-') || arg == "-" {
            options.users.push(arg);
            continue;
        }
        if arg == "--" {
            only_users = true;
            continue;
        }
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
            None => (arg.clone(), None),
        };
        // An option with a value given twice would quietly drop the first value
        // (a whole `--file` of users, say).
        let with_value = [
            "--file",
            "--output",
            "--cloud",
            "--base-url",
            "--concurrency",
        ];
        if with_value.contains(&name.as_str()) && !seen.insert(name.clone()) {
            let hint = if name == "--file" {
                " (lists can be joined: cat a.txt b.txt | user_machines --file -)"
            } else {
                ""
            };
            return Err(Usage(format!("{name} is given twice{hint}")));
        }
        let mut value = |what: &str| -> Result<String, Usage> {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| Usage(format!("{} needs a value ({what})", clip(&name, 200))))
        };
        match name.as_str() {
            "-h" | "--help" => return Ok(None),
            "--demo" if inline.is_some() => return Err(Usage("--demo takes no value".into())),
            "--demo" => options.demo = true,
            "--file" => options.file = Some(value("a path, or '-' for standard input")?),
            "--output" => {
                options.format = match value("table, json or csv")?.as_str() {
                    "table" => Format::Table,
                    "json" => Format::Json,
                    "csv" => Format::Csv,
                    other => {
                        return Err(Usage(format!(
                            "unknown output format {other:?}: use table, json or csv"
                        )))
                    }
                }
            }
            "--cloud" => cloud_name = Some(value("a cloud name")?),
            "--base-url" => options.base_url = Some(value("a URL")?),
            "--concurrency" => {
                let n = value("a number")?;
                options.concurrency = match n.parse::<usize>() {
                    Ok(n) if n >= 1 => n,
                    _ => {
                        return Err(Usage(format!(
                            "--concurrency must be a whole number of at least 1, not {n:?}"
                        )))
                    }
                };
            }
            _ => {
                return Err(Usage(format!(
                    "unknown option {} (a user name starting with '-' goes after --)",
                    clip(&name, 200)
                )))
            }
        }
    }
    if options.demo && (cloud_name.is_some() || options.base_url.is_some()) {
        return Err(Usage(
            "--demo runs against the embedded stand-in: it cannot be combined with --cloud \
             or --base-url"
                .into(),
        ));
    }
    // An unknown cloud is a mistake in the options, reported with them.
    options.cloud = cloud_name
        .map(|name| {
            name.parse()
                .map_err(|e: ParseCloudError| Usage(e.to_string()))
        })
        .transpose()?;
    Ok(Some(options))
}

/// Reads the users of `--file`: one a line (ended by a line feed, a carriage
/// return or both), blank lines and `#` comments skipped, and the byte-order
/// mark some editors put at the start of a UTF-8 file ignored.
fn read_users(path: &str) -> Result<Vec<String>, Usage> {
    let reader: Box<dyn BufRead> = if path == "-" {
        Box::new(io::stdin().lock())
    } else {
        let file = std::fs::File::open(path)
            .map_err(|e| Usage(format!("cannot read --file {}: {e}", clip(path, 200))))?;
        Box::new(io::BufReader::new(file))
    };
    let mut users = Vec::new();
    // The number of the next line, counting those a lone carriage return ends.
    let mut next = 1;
    for line in reader.lines() {
        let line = line.map_err(|e| {
            let hint = if e.kind() == io::ErrorKind::InvalidData {
                " (it must be UTF-8; a file saved as UTF-16, as Windows PowerShell's `>` \
                 does, can be saved again as UTF-8)"
            } else {
                ""
            };
            Usage(format!(
                "cannot read --file {}, line {next}: {e}{hint}",
                clip(path, 200),
            ))
        })?;
        // A lone carriage return ends a line too (old Mac files): no user name
        // holds one, so nothing that could be looked up is split. One at the
        // end (of a CRLF line) ends the line it is on.
        let mut lines: Vec<&str> = line.split('\r').collect();
        if lines.len() > 1 && lines.last() == Some(&"") {
            lines.pop();
        }
        for line in lines {
            let number = next;
            next += 1;
            // A byte order mark on any line (files joined with `cat` keep theirs).
            let line = line.strip_prefix('\u{FEFF}').unwrap_or(line).trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            // `#` may be part of a name, so it does not start a comment after
            // one; but `user1  # a note` is far more likely a note than a name.
            if line
                .char_indices()
                .any(|(i, c)| c == '#' && line[..i].ends_with(char::is_whitespace))
            {
                say!(
                    "warning: --file line {number}: {}: a '#' after white space is part of \
                     the user name, not a comment (only a line that starts with '#' is one)",
                    clip(line, 200)
                );
            }
            users.push(line.to_owned());
        }
    }
    Ok(users)
}

/// The environment variable `name`: `None` when unset or blank, and a usage
/// error when it is not UTF-8 (which would otherwise be taken as unset: a base
/// URL quietly the real API's).
fn env(name: &str) -> Result<Option<String>, Usage> {
    match std::env::var(name) {
        Ok(value) => Ok(Some(value).filter(|v| !v.trim().is_empty())),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => {
            Err(Usage(format!("{name} is set, but not to valid UTF-8")))
        }
    }
}

/// The credential of the `AZURE_*` variables, signing in at the cloud's
/// authority unless `AZURE_AUTHORITY_HOST` says otherwise.
fn credential_from_env(cloud: &Cloud) -> Result<EnvironmentCredential, Usage> {
    // As `EnvironmentCredential::from_env` does: a variable that is used, set to
    // a value that is not UTF-8, is not taken as unset.
    let secret_set = env("AZURE_CLIENT_SECRET")?.is_some();
    let used = ["AZURE_TENANT_ID", "AZURE_CLIENT_ID", "AZURE_AUTHORITY_HOST"]
        .into_iter()
        .chain((!secret_set).then_some("AZURE_CLIENT_CERTIFICATE_PATH"));
    for name in used {
        env(name)?;
    }
    EnvironmentCredential::from_lookup(|name| {
        let value = std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        if name == "AZURE_AUTHORITY_HOST" && value.is_none() {
            return Some(cloud.authority_host().to_owned());
        }
        value
    })
    .map_err(|e| match e {
        Error::Credential { message, .. } => Usage(format!(
            "no usable credentials: {message}\n\
             Set {CREDENTIAL_VARIABLES}, or try --demo."
        )),
        other => Usage(other.to_string()),
    })
}

/// The outcome of one input.
struct Outcome {
    user: String,
    result: Result<Vec<Machine>, Error>,
}

/// Counts for the summary line.
#[derive(Default)]
struct Tally {
    users: usize,
    machines: usize,
    failed: usize,
    /// `user: reason`, printed on standard error at the end.
    failures: Vec<String>,
}

async fn run(options: Options) -> Result<ExitCode, Usage> {
    let mut users = options.users.clone();
    if let Some(path) = &options.file {
        users.extend(read_users(path)?);
    }
    if users.is_empty() {
        return Err(Usage(
            "no users: name them as arguments or with --file (see --help)".into(),
        ));
    }

    // A name the rule keeps but Defender is unlikely to know (white space before
    // the `@`, a byte order mark, a lookalike `@`) finds no machines rather than
    // failing: said before anything is looked up.
    for user in &users {
        if let Some(oddity) = UserName::parse(user).ok().and_then(|name| name.oddity()) {
            say!(
                "warning: {}: the user name {oddity}; Defender is unlikely to know it",
                clip(user, 200)
            );
        }
    }

    let cloud = options.cloud.clone().unwrap_or(Cloud::Commercial);
    // (Not read for the demo, which has its own.)
    let base_url = match options.base_url.clone() {
        Some(url) => Some(url),
        None if options.demo => None,
        None => env("DEFENDER_BASE_URL")?,
    };
    let mut demo_server = None;
    let builder = if options.demo {
        // The stand-in's token endpoint issues the token its API accepts. It is
        // on loopback, so no proxy of the environment may stand in between.
        let demo = demo::Demo::start().await;
        let direct = || {
            reqwest::Client::builder()
                .no_proxy()
                .user_agent(defender_endpoint::USER_AGENT)
                .timeout(Duration::from_secs(30))
                .build()
                .map_err(|e| Usage(format!("cannot build the HTTP client: {e}")))
        };
        let credential = ClientSecretCredential::new(
            demo::DEMO_TENANT,
            demo::DEMO_CLIENT_ID,
            demo::DEMO_CLIENT_SECRET,
        )
        .authority_host(demo.authority_host())
        .map_err(|e| Usage(e.to_string()))?
        .http_client(direct()?);
        let builder = Client::builder()
            .base_url(demo.base_url())
            .http_client(direct()?)
            .credential(credential);
        demo_server = Some(demo);
        builder
    } else {
        let credential = credential_from_env(&cloud)?;
        let builder = Client::builder().cloud(cloud).credential(credential);
        match base_url {
            Some(url) => builder.base_url(url),
            None => builder,
        }
    };
    let client = builder.build().map_err(|e| match &e {
        // A base URL of another cloud's API than --cloud's: say which option fixes it.
        defender_endpoint::Error::Config(message) if message.contains("another cloud") => Usage(
            format!("{e}\nhint: --base-url only says where calls go; --cloud names the cloud, whose tokens that API takes (see --help)"),
        ),
        _ => Usage(e.to_string()),
    })?;

    let started = Instant::now();
    let total = users.len();
    let mut positions: HashMap<String, VecDeque<usize>> = HashMap::new();
    for (i, user) in users.iter().enumerate() {
        positions.entry(user.clone()).or_default().push_back(i);
    }
    let mut results = Box::pin(client.machines_for_users(users, options.concurrency));

    let stdout = io::stdout();
    let mut out = Output::new(options.format, stdout.lock());
    let mut progress = Progress::new(total);
    let mut tally = Tally::default();
    let mut pending: BTreeMap<usize, Outcome> = BTreeMap::new();
    let mut next = 0usize;
    let mut done = 0usize;
    let mut interrupted = false;
    // The credential's refusal, which ends the run.
    let mut refused: Option<String> = None;
    // The first failed write to standard output: a closed pipe (`| head`) ends the
    // run quietly, any other failure (a full disk) is an error.
    let mut write_error: Option<io::Error> = None;

    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        // `biased`: the Ctrl-C handler is in place before the first result is printed.
        let item = tokio::select! {
            biased;
            _ = &mut ctrl_c => {
                interrupted = true;
                None
            }
            item = results.next() => item,
        };
        let Some((user, result)) = item else { break };
        // The token endpoint refused the credential itself (a wrong secret, an
        // unknown app or tenant): every other lookup would fail the same way,
        // and each would be one more failed sign-in in the tenant's logs.
        if let Err(
            error @ Error::Credential {
                status: Some(status),
                ..
            },
        ) = &result
        {
            if (400..500).contains(status) && *status != 429 && *status != 408 {
                refused = Some(clip(&error.to_string(), usize::MAX));
                break;
            }
        }
        done += 1;
        let index = positions
            .get_mut(&user)
            .and_then(VecDeque::pop_front)
            .unwrap_or(next);
        pending.insert(index, Outcome { user, result });
        // Results arrive as lookups finish; print them in input order.
        while let Some(outcome) = pending.remove(&next) {
            next += 1;
            progress.clear();
            if write_error.is_none() {
                write_error = out.write(&outcome, &mut tally).err();
            }
        }
        if write_error.is_some() {
            // Nobody reads the output any more (`| head`): stop looking up.
            break;
        }
        progress.update(done, client.stats().throttled);
    }
    // What finished out of order before an interruption.
    for (_, outcome) in std::mem::take(&mut pending) {
        progress.clear();
        if write_error.is_none() {
            write_error = out.write(&outcome, &mut tally).err();
        }
    }
    progress.clear();
    if write_error.is_none() {
        write_error = out.finish().err();
    }
    let write_error = write_error.filter(|e| e.kind() != io::ErrorKind::BrokenPipe);
    drop(results);
    drop(demo_server);

    for failure in &tally.failures {
        say!("failed: {failure}");
    }
    let stats = client.stats();
    let mut summary = format!(
        "{} {}, {} {}, {} failed, {:.1} s",
        tally.users,
        plural(tally.users, "user", "users"),
        tally.machines,
        plural(tally.machines, "machine", "machines"),
        tally.failed,
        started.elapsed().as_secs_f64(),
    );
    if stats.throttled == 0 && stats.throttle_wait.is_zero() {
        summary.push_str(", no throttling waits");
    } else {
        // The seconds are summed over calls: every call held back by one
        // `Retry-After` waits it too, so they can add up to more than the run took.
        summary.push_str(&format!(
            ", {} 429 {} waited out, {:.1} s of throttling waits summed over calls",
            stats.throttled,
            plural(stats.throttled as usize, "answer", "answers"),
            stats.throttle_wait.as_secs_f64(),
        ));
    }
    if stats.quota_wait >= Duration::from_millis(100) {
        summary.push_str(&format!(
            ", {:.1} s waiting for the client-side quota",
            stats.quota_wait.as_secs_f64()
        ));
    }
    if let Some(refused) = refused {
        say!("error: {refused}; no more users are looked up");
        say!("{summary}");
        return Ok(ExitCode::from(2));
    }
    if interrupted {
        say!(
            "interrupted: {} of {total} users looked up; {summary}",
            tally.users
        );
        return Ok(ExitCode::from(130));
    }
    say!("{summary}");
    if let Some(e) = write_error {
        say!("error: cannot write the output: {e}");
        return Ok(ExitCode::from(1));
    }
    Ok(if tally.failed > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 {
        one
    } else {
        many
    }
}

/// Writes outcomes to standard output in one of the formats, and failures to
/// standard error.
struct Output<W: Write> {
    format: Format,
    out: W,
    started: bool,
    now: DateTime<Utc>,
}

impl<W: Write> Output<W> {
    fn new(format: Format, out: W) -> Self {
        Self {
            format,
            out,
            started: false,
            now: Utc::now(),
        }
    }

    fn write(&mut self, outcome: &Outcome, tally: &mut Tally) -> io::Result<()> {
        tally.users += 1;
        match &outcome.result {
            Ok(machines) => tally.machines += machines.len(),
            Err(error) => {
                tally.failed += 1;
                // For standard error: the input and the service's texts escaped like
                // the table's values, so that neither can drive the terminal.
                let failure = format!(
                    "{}: {}",
                    clip(&outcome.user, 200),
                    clip(&error.to_string(), usize::MAX)
                );
                tally.failures.push(failure);
            }
        }
        let first = !self.started;
        self.started = true;
        match self.format {
            Format::Table => {
                if first {
                    self.table_header()?;
                }
                self.table_rows(outcome)?;
            }
            Format::Json => {
                let entry = match &outcome.result {
                    Ok(machines) => JsonEntry {
                        user: &outcome.user,
                        machines: Some(machines),
                        error: None,
                    },
                    Err(error) => JsonEntry {
                        user: &outcome.user,
                        machines: None,
                        error: Some(error_json(error)),
                    },
                };
                let text = serde_json::to_string_pretty(&entry).map_err(io::Error::other)?;
                let text = text.replace('\n', "\n  ");
                write!(self.out, "{}\n  {text}", if first { "[" } else { "," })?;
            }
            Format::Csv => {
                if first {
                    write_csv_row(&mut self.out, CSV_HEADER)?;
                }
                self.csv_rows(outcome)?;
            }
        }
        self.out.flush()
    }

    fn finish(&mut self) -> io::Result<()> {
        match self.format {
            Format::Json if self.started => writeln!(self.out, "\n]")?,
            Format::Json => writeln!(self.out, "[]")?,
            Format::Csv if !self.started => write_csv_row(&mut self.out, CSV_HEADER)?,
            _ => {}
        }
        self.out.flush()
    }

    fn table_header(&mut self) -> io::Result<()> {
        let line1 = table_line(&["USER", "COMPUTER", "OS", "HEALTH", "RISK", "EXPOSURE"]);
        let line2 = second_line("LAST SEEN", "LAST IP", "TAGS");
        writeln!(
            self.out,
            "{line1}\n{line2}\n{}",
            "─".repeat(TABLE_WIDTH - 1)
        )
    }

    fn table_rows(&mut self, outcome: &Outcome) -> io::Result<()> {
        let machines = match &outcome.result {
            Ok(machines) => machines,
            Err(error) => {
                let text = format!("failed: {error}");
                let line = table_line(&[&outcome.user, &text]);
                return writeln!(self.out, "{}", clip(&line, TABLE_WIDTH - 1));
            }
        };
        if machines.is_empty() {
            let line = table_line(&[&outcome.user, "(no machines)"]);
            return writeln!(self.out, "{line}");
        }
        for m in machines {
            let line1 = table_line(&[
                &outcome.user,
                m.computer_dns_name.as_deref().unwrap_or("-"),
                &os(m),
                &shown_label(&m.health_status),
                &shown_label(&m.risk_score),
                &shown_label(&m.exposure_level),
            ]);
            let line2 = second_line(
                &last_seen(m.last_seen, self.now),
                m.last_ip_address.as_deref().unwrap_or("-"),
                &m.machine_tags.as_deref().unwrap_or_default().join(", "),
            );
            writeln!(self.out, "{line1}\n{line2}")?;
        }
        Ok(())
    }

    fn csv_rows(&mut self, outcome: &Outcome) -> io::Result<()> {
        let user = outcome.user.as_str();
        match &outcome.result {
            Err(error) => {
                let mut row = [""; CSV_HEADER.len()];
                row[0] = user;
                let message = error.to_string();
                row[CSV_HEADER.len() - 1] = &message;
                write_csv_row(&mut self.out, &row)
            }
            Ok(machines) if machines.is_empty() => {
                let mut row = [""; CSV_HEADER.len()];
                row[0] = user;
                write_csv_row(&mut self.out, &row)
            }
            Ok(machines) => {
                for m in machines {
                    let build = m.os_build.map(|b| b.to_string()).unwrap_or_default();
                    let last_seen = m
                        .last_seen
                        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
                        .unwrap_or_default();
                    let tags = csv_tags(m.machine_tags.as_deref().unwrap_or_default());
                    let row = [
                        user,
                        &m.id,
                        m.computer_dns_name.as_deref().unwrap_or_default(),
                        m.os_platform.as_deref().unwrap_or_default(),
                        &build,
                        &label(&m.health_status).unwrap_or_default(),
                        &label(&m.risk_score).unwrap_or_default(),
                        &label(&m.exposure_level).unwrap_or_default(),
                        &last_seen,
                        m.last_ip_address.as_deref().unwrap_or_default(),
                        &tags,
                        "",
                    ];
                    write_csv_row(&mut self.out, &row)?;
                }
                Ok(())
            }
        }
    }
}

const CSV_HEADER: &[&str; 12] = &[
    "user",
    "machine_id",
    "computer_dns_name",
    "os_platform",
    "os_build",
    "health_status",
    "risk_score",
    "exposure_level",
    "last_seen",
    "last_ip_address",
    "machine_tags",
    "error",
];

/// One CSV record (RFC 4180: fields with `,`, `;`, `"` or line breaks are quoted).
/// A field a spreadsheet would run as a formula gets a leading `'`: device names
/// and tags can be set by whoever controls a device.
fn write_csv_row(out: &mut impl Write, fields: &[&str]) -> io::Result<()> {
    let mut line = String::new();
    for (i, field) in fields.iter().enumerate() {
        if i > 0 {
            line.push(',');
        }
        let guarded;
        let field = if field.starts_with(['=', '+', '-', '@', '\t', '\r']) {
            guarded = format!("'{field}");
            guarded.as_str()
        } else {
            field
        };
        // `;` too: where it is the list separator (de-DE, fr-FR, …), a
        // spreadsheet splits unquoted fields at it, and a part could start a formula.
        if field.contains([',', ';', '"', '\n', '\r']) {
            line.push('"');
            line.push_str(&field.replace('"', "\"\""));
            line.push('"');
        } else {
            line.push_str(field);
        }
    }
    line.push_str("\r\n");
    out.write_all(line.as_bytes())
}

/// One element of the JSON output: `{"user", "machines"}` or `{"user", "error"}`.
#[derive(Serialize)]
struct JsonEntry<'a> {
    user: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    machines: Option<&'a [Machine]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<Value>,
}

/// The JSON form of a failure: its message, and the fields Defender sent.
fn error_json(error: &Error) -> Value {
    let mut value = json!({"message": error.to_string()});
    if let Some(status) = error.status() {
        value["status"] = json!(status);
    }
    if let Error::Api {
        code: Some(code), ..
    } = error
    {
        value["code"] = json!(code);
    }
    if let Some(target) = error.target() {
        value["target"] = json!(target);
    }
    if let Some(wait) = error.retry_after() {
        value["retryAfterSeconds"] = json!(wait.as_secs_f64());
    }
    value
}

// Column widths of the table's first line; the second line starts under COMPUTER.
const COLUMNS: [usize; 6] = [17, 28, 16, 12, 8, 8];
const GAP: &str = "  ";

/// The first line of a row: each value clipped to its column.
fn table_line(values: &[&str]) -> String {
    let mut line = String::new();
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            line.push_str(GAP);
        }
        let width = if i + 1 == values.len() && values.len() < COLUMNS.len() {
            TABLE_WIDTH - 1 - columns(&line)
        } else {
            COLUMNS[i]
        };
        line.push_str(&pad(&clip(value, width), width));
    }
    line.trim_end().to_owned()
}

/// The second line of a row: last seen under COMPUTER, last IP under OS, tags from HEALTH on.
fn second_line(last_seen: &str, ip: &str, tags: &str) -> String {
    let indent = COLUMNS[0] + GAP.len();
    let mut line = " ".repeat(indent);
    line.push_str(&pad(&clip(last_seen, COLUMNS[1]), COLUMNS[1]));
    line.push_str(GAP);
    line.push_str(&pad(&clip(ip, COLUMNS[2]), COLUMNS[2]));
    line.push_str(GAP);
    let room = TABLE_WIDTH - 1 - columns(&line);
    line.push_str(&clip(tags, room));
    line.trim_end().to_owned()
}

/// `message` with every control or invisible character escaped but its line
/// breaks: what a caller typed (an option, a path, a URL) cannot move the cursor
/// or recolour the terminal.
fn printable(message: &str) -> String {
    message
        .split('\n')
        .map(|line| clip(line, usize::MAX))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `text` cut to `width` terminal columns, with `…` where it was cut (a wide
/// character, CJK or emoji, takes two). Control and
/// invisible characters (escape sequences, line breaks, bidirectional overrides)
/// are shown escaped, so that no value can redraw or fake the table's lines.
fn clip(text: &str, width: usize) -> String {
    let escaped;
    let text = if text.chars().any(|c| c.is_control() || is_invisible(c)) {
        escaped = text.escape_debug().to_string();
        &escaped
    } else {
        text
    };
    if columns(text) <= width {
        return text.to_owned();
    }
    // Measured as a whole, as the terminal does: a character may widen the one
    // before it (an emoji with its presentation selector, U+FE0F).
    let room = width.saturating_sub(1);
    let mut clipped = String::new();
    for c in text.chars() {
        clipped.push(c);
        // (However many zero-width characters follow, a cell stays short.)
        if columns(&clipped) > room || clipped.len() > 8 * room + 8 {
            clipped.pop();
            break;
        }
    }
    clipped.push('…');
    clipped
}

/// The terminal columns `text` takes.
fn columns(text: &str) -> usize {
    text.width()
}

/// Characters that are invisible, or change how a terminal shows the text around
/// them: formatting characters (Unicode category Cf) and the line and paragraph
/// separators.
fn is_invisible(c: char) -> bool {
    // Not the zero-width (non-)joiners U+200C and U+200D, which scripts and emoji need.
    matches!(
        c,
        '\u{AD}'                        // soft hyphen
            | '\u{600}'..='\u{605}'    // Arabic number signs
            | '\u{61C}'                 // Arabic letter mark
            | '\u{6DD}' | '\u{70F}' | '\u{890}'..='\u{891}' | '\u{8E2}'
            | '\u{180E}'                // Mongolian vowel separator
            | '\u{200B}'                // zero-width space
            | '\u{200E}'..='\u{200F}'  // left-to-right and right-to-left marks
            | '\u{2028}'..='\u{202E}'  // line and paragraph separators, bidirectional embeddings and overrides
            | '\u{2060}'..='\u{206F}'  // word joiner, invisible operators, isolates
            | '\u{FEFF}'                // byte-order mark
            | '\u{FFF9}'..='\u{FFFB}'  // interlinear annotation
            | '\u{110BD}' | '\u{110CD}' | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}' | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0001}' | '\u{E0020}'..='\u{E007F}' // tags
    )
}

/// Machine tags in one CSV cell: joined with `;`, with a `;` or `\` inside a tag
/// escaped with a `\`, so that the cell splits back into the tags it was made of.
fn csv_tags(tags: &[String]) -> String {
    let escaped: Vec<String> = tags
        .iter()
        .map(|tag| tag.replace('\\', "\\\\").replace(';', "\\;"))
        .collect();
    escaped.join(";")
}

/// `text` followed by spaces up to `width` terminal columns.
fn pad(text: &str, width: usize) -> String {
    let mut padded = text.to_owned();
    padded.extend(std::iter::repeat_n(
        ' ',
        width.saturating_sub(columns(text)),
    ));
    padded
}

/// The OS platform and build: `Windows11 22000`.
fn os(machine: &Machine) -> String {
    match (&machine.os_platform, machine.os_build) {
        (Some(platform), Some(build)) => format!("{platform} {build}"),
        (Some(platform), None) => platform.clone(),
        (None, Some(build)) => format!("build {build}"),
        (None, None) => "-".into(),
    }
}

/// The value of one of the API's open enumerations as the API spelled it, if any.
fn label<T: Serialize>(value: &Option<T>) -> Option<String> {
    match value.as_ref().map(serde_json::to_value)? {
        Ok(Value::String(s)) => Some(s),
        Ok(other) => Some(other.to_string()),
        Err(_) => None,
    }
}

/// [`label`] for the table, where a missing value shows as `-`.
fn shown_label<T: Serialize>(value: &Option<T>) -> String {
    label(value).unwrap_or_else(|| "-".into())
}

/// `2024-01-02 00:00 (1y ago)`.
fn last_seen(at: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    let Some(at) = at else { return "-".into() };
    format!(
        "{} ({})",
        at.format("%Y-%m-%d %H:%M"),
        relative(now.signed_duration_since(at))
    )
}

/// A short relative time: `just now`, `5m ago`, `3h ago`, `12d ago`, `4mo ago`, `2y ago`.
fn relative(age: chrono::TimeDelta) -> String {
    let seconds = age.num_seconds();
    let (future, seconds) = (seconds < 0, seconds.unsigned_abs());
    let text = match seconds {
        0..60 => return "just now".into(),
        60..3_600 => format!("{}m", seconds / 60),
        3_600..86_400 => format!("{}h", seconds / 3_600),
        86_400..2_592_000 => format!("{}d", seconds / 86_400),
        2_592_000..31_536_000 => format!("{}mo", seconds / 2_592_000),
        _ => format!("{}y", seconds / 31_536_000),
    };
    if future {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

/// A progress bar with rate and ETA on standard error, only when it is a terminal.
struct Progress {
    enabled: bool,
    total: usize,
    started: Instant,
    drawn_at: Option<Instant>,
    visible: bool,
}

impl Progress {
    fn new(total: usize) -> Self {
        Self {
            enabled: total > 1 && io::stderr().is_terminal(),
            total,
            started: Instant::now(),
            drawn_at: None,
            visible: false,
        }
    }

    fn update(&mut self, done: usize, throttled: u64) {
        if !self.enabled || done >= self.total {
            return;
        }
        let now = Instant::now();
        if self
            .drawn_at
            .is_some_and(|at| now - at < Duration::from_millis(100))
        {
            return;
        }
        self.drawn_at = Some(now);
        let elapsed = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = done as f64 / elapsed;
        let eta = if rate > 0.0 {
            format_duration((self.total - done) as f64 / rate)
        } else {
            "?".into()
        };
        const BAR: usize = 30;
        let filled = BAR * done / self.total.max(1);
        let mut line = format!(
            "\r[{}{}] {done}/{} {rate:.1}/s ETA {eta}",
            "#".repeat(filled),
            "-".repeat(BAR - filled),
            self.total,
        );
        if throttled > 0 {
            line.push_str(&format!(" (throttled {throttled}×)"));
        }
        let mut err = io::stderr().lock();
        let _ = write!(err, "{line}\x1b[K");
        let _ = err.flush();
        self.visible = true;
    }

    fn clear(&mut self) {
        if self.visible {
            let mut err = io::stderr().lock();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
            self.visible = false;
            self.drawn_at = None;
        }
    }
}

fn format_duration(seconds: f64) -> String {
    let s = seconds.round() as u64;
    if s >= 3_600 {
        format!("{}h{:02}m", s / 3_600, s / 60 % 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}
