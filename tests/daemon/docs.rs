//! The docs cannot drift from the code: every `serve` option has its row in the configuration
//! reference (and every row is an option), every `ERR` reason the code can produce is in the
//! protocol page's table (and every one there can occur), every metric the daemon exports is
//! in the operations page, the rate-limit reply is written as the wire says it, and every
//! relative link between the pages lands on a file and a heading.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::common::*;

fn read(relative: &str) -> String {
    std::fs::read_to_string(repo_file(relative))
        .unwrap_or_else(|e| panic!("{relative} unreadable: {e}"))
}

/// The lines of a page's `## heading` section, up to the next `## `.
fn section<'a>(page: &'a str, heading: &str) -> Vec<&'a str> {
    let mut lines = page.lines().skip_while(|l| l.trim_end() != heading);
    assert!(lines.next().is_some(), "no {heading:?} section");
    lines.take_while(|l| !l.starts_with("## ")).collect()
}

/// The cells of a Markdown table's body rows (the header and its `---` line left out).
fn table_rows<'a>(lines: &[&'a str]) -> Vec<Vec<&'a str>> {
    lines
        .iter()
        .filter(|l| l.starts_with('|') && !l.starts_with("| ---"))
        .skip(1)
        .map(|l| l.trim_matches('|').split(" | ").map(str::trim).collect())
        .collect()
}

/// `serve --help`'s options: the flag, its env var, its default and its range, as `--help`
/// prints them.
struct HelpOption {
    flag: String,
    env: Option<String>,
    default: Option<String>,
    range: Option<(u64, u64)>,
}

/// The first `LOW-HIGH` in an option's text (`(100-60000)`); an example such as an MCC-MNC,
/// `310-260`, is no range.
fn range_in(text: &str) -> Option<(u64, u64)> {
    let range = regex_lite::Regex::new(r"\b([0-9]+)-([0-9]+)\b").unwrap();
    let first = range.captures_iter(text).find_map(|c| {
        let (low, high) = (c[1].parse().ok()?, c[2].parse().ok()?);
        (low <= high).then_some((low, high))
    });
    first
}

fn serve_options() -> Vec<HelpOption> {
    let out = command()
        .args(["serve", "--help"])
        .stdin(Stdio::null())
        .output()
        .expect("run serve --help");
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    let name = regex_lite::Regex::new(r"^ {2,6}(?:-\w, )?(--[a-z0-9-]+)").unwrap();
    let env = regex_lite::Regex::new(r"\[env: ([A-Z0-9_]+)\]").unwrap();
    let default = regex_lite::Regex::new(r"\[default: ([^\]]*)\]").unwrap();
    let mut blocks: Vec<(String, String)> = Vec::new();
    for line in help.lines() {
        if let Some(c) = name.captures(line) {
            blocks.push((c[1].to_owned(), String::new()));
        } else if let Some((_, text)) = blocks.last_mut() {
            text.push(' ');
            text.push_str(line.trim());
        }
    }
    let options: Vec<HelpOption> = blocks
        .into_iter()
        .filter(|(flag, _)| flag != "--help")
        .map(|(flag, text)| HelpOption {
            env: env.captures(&text).map(|c| c[1].to_owned()),
            default: default.captures(&text).map(|c| c[1].to_owned()),
            range: range_in(&text),
            flag,
        })
        .collect();
    assert!(
        options.len() >= 40,
        "only {} options in:\n{help}",
        options.len()
    );
    options
}

/// The configuration reference's rows that name a flag: (flag, the row's cells).
fn reference_rows(page: &str) -> Vec<(String, Vec<String>)> {
    let flag = regex_lite::Regex::new(r"^`(--[a-z0-9-]+)").unwrap();
    let rows = table_rows(&section(page, "## Options"));
    assert!(
        rows.len() >= 40,
        "only {} rows in the reference",
        rows.len()
    );
    rows.into_iter()
        .filter_map(|cells| {
            let name = flag.captures(cells[0])?[1].to_owned();
            Some((name, cells.iter().map(|c| c.to_string()).collect()))
        })
        .collect()
}

#[test]
fn the_configuration_reference_has_a_row_for_every_serve_option_and_no_other() {
    let page = read("docs/configuration.md");
    let rows = reference_rows(&page);
    let options = serve_options();
    let in_help: BTreeSet<&str> = options.iter().map(|o| o.flag.as_str()).collect();
    let in_docs: BTreeSet<&str> = rows.iter().map(|(f, _)| f.as_str()).collect();
    let missing: Vec<_> = in_help.difference(&in_docs).collect();
    let bogus: Vec<_> = in_docs.difference(&in_help).collect();
    assert!(
        missing.is_empty(),
        "options with no row in docs/configuration.md: {missing:?}"
    );
    assert!(
        bogus.is_empty(),
        "rows in docs/configuration.md naming no option of serve: {bogus:?}"
    );
    // The row's env var and default are the ones clap prints.
    let mut wrong = Vec::new();
    for option in &options {
        let (_, cells) = rows.iter().find(|(f, _)| *f == option.flag).expect("row");
        let env_cell = &cells[1];
        match &option.env {
            Some(env) if !env_cell.contains(&format!("`{env}`")) => wrong.push(format!(
                "{}: env {env}, the row says {env_cell}",
                option.flag
            )),
            None if env_cell != "—" => wrong.push(format!(
                "{}: no env var, the row says {env_cell}",
                option.flag
            )),
            _ => {}
        }
        if let Some(default) = &option.default {
            let default = default.trim_matches('"');
            let default_cell = &cells[3];
            if !default_cell.contains(default) {
                wrong.push(format!(
                    "{}: default {default:?}, the row says {default_cell}",
                    option.flag
                ));
            }
        }
        if let Some((low, high)) = option.range {
            let range_cell = &cells[4];
            if !range_cell.contains(&format!("{low}–{high}")) {
                wrong.push(format!(
                    "{}: range {low}–{high}, the row says {range_cell}",
                    option.flag
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "rows that disagree with --help:\n{}",
        wrong.join("\n")
    );
}

/// The reason tokens `CallError::reason()` returns, read from its source: the one place the
/// wire's tokens are spelled. (No command prints them, and `/metrics` only names the reasons
/// that occurred; a source that no longer holds the function fails this loudly.)
fn reasons_in_the_code() -> BTreeSet<String> {
    let arm = regex_lite::Regex::new(r#"=>\s*"([a-z_]+)""#).unwrap();
    let mut found = BTreeSet::new();
    for file in rust_files(&repo_file("src")) {
        let source = std::fs::read_to_string(&file).expect("source readable");
        if !source.contains("enum CallError") {
            continue;
        }
        let Some(start) = source.find("fn reason(&self) -> &'static str") else {
            continue;
        };
        let body = &source[start..];
        let end = body.find("\n    }\n").expect("the end of fn reason");
        found.extend(arm.captures_iter(&body[..end]).map(|c| c[1].to_owned()));
    }
    assert!(
        found.len() >= 5,
        "CallError::reason() not found under src/ (found {found:?}): update this test"
    );
    found
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("src readable") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

#[test]
fn the_protocol_page_documents_every_err_reason_and_no_other() {
    let page = read("docs/protocol.md");
    let rows = table_rows(&section(&page, "## Errors"));
    let token = regex_lite::Regex::new(r"^`([a-z_]+)`$").unwrap();
    let mut documented = BTreeSet::new();
    for cells in &rows {
        let reason = token
            .captures(cells[0])
            .unwrap_or_else(|| panic!("an Errors row without a reason token: {cells:?}"))[1]
            .to_owned();
        // Its texts: every example is an `ERR <reason>` line.
        let examples = cells.last().expect("cells");
        assert!(
            examples.contains(&format!("`ERR {reason}")),
            "{reason}: no `ERR {reason}…` example in {examples}"
        );
        documented.insert(reason);
    }
    let code = reasons_in_the_code();
    let undocumented: Vec<_> = code.difference(&documented).collect();
    let impossible: Vec<_> = documented.difference(&code).collect();
    assert!(
        undocumented.is_empty(),
        "ERR reasons the code can send, missing from docs/protocol.md: {undocumented:?}"
    );
    assert!(
        impossible.is_empty(),
        "ERR reasons in docs/protocol.md the code never sends: {impossible:?}"
    );
}

#[tokio::test]
async fn the_rate_limit_reply_is_documented_as_the_wire_says_it() {
    let daemon = Daemon::start(
        &format!("http://{}", dead_address()),
        Options {
            rate_limits_on: true,
            ..Default::default()
        }
        .arg("--dry-run"),
    );
    let mut client = daemon.unix_client().await;
    let mut last = Ok(String::new());
    for _ in 0..4 {
        last = client.send_otp(OTP, PHONE, "ACME").await.expect("answered");
    }
    let wire = last.expect_err("the fourth send to one phone is refused");
    let digits = regex_lite::Regex::new(r"[0-9]+").unwrap();
    let shape = digits.replace_all(&wire, "N").into_owned();
    assert_eq!(shape, "ERR rate_limited: retry in N s", "the wire changed");
    // Every `ERR rate_limited…` the pages write has the wire's shape.
    let quoted = regex_lite::Regex::new(r"`(ERR rate_limited[^`]*)`").unwrap();
    let mut seen = 0;
    for page in ["README.md", "docs/protocol.md", "docs/configuration.md"] {
        for c in quoted.captures_iter(&read(page)) {
            seen += 1;
            assert_eq!(
                digits.replace_all(&c[1], "N"),
                shape,
                "{page} quotes {} for a rate-limit refusal",
                &c[1]
            );
        }
    }
    assert!(seen >= 3, "the rate-limit reply is quoted {seen} times");
}

/// Metric names as a scrape writes them: a counter's samples carry `_total`.
fn exported_metrics(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let (name, kind) = l.split_once(' ')?;
            Some(match kind {
                "counter" => format!("{name}_total"),
                _ => name.to_owned(),
            })
        })
        .collect()
}

#[tokio::test]
async fn every_exported_metric_is_in_the_operations_page() {
    let tokens = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(tokens.path(), "bigip-a 0123456789abcdef0123\n").expect("write tokens");
    let daemon = Daemon::start(
        &format!("http://{}", dead_address()),
        Options {
            rate_limits_on: true,
            ..Default::default()
        }
        .args(["--dry-run", "--metrics=127.0.0.1:0", "--deny-countries=CU"])
        .arg(format!("--caller-tokens-file={}", tokens.path().display())),
    );
    let addr = log_field(&daemon.ready, "metrics").expect("metrics address");
    let mut client = daemon.unix_client().await;
    let token = || {
        context(&[
            ("token", "0123456789abcdef0123"),
            ("locale", "en-US,en;q=0.9"),
        ])
    };
    // Calls, refusals of each guard, an ignored context value, a caller, a reload.
    let _ = client.call("ping", vec![]).await.expect("answered");
    for _ in 0..4 {
        let _ = send_with(&mut client, PHONE, token()).await;
    }
    let _ = send_with(&mut client, "+5351234567", token()).await;
    daemon.signal("HUP");
    daemon.wait_for_log("reload");
    let (status, text) = scrape(&addr, "/metrics").await;
    assert_eq!(status, 200);
    let exported = exported_metrics(&text);
    let page = read("docs/operations.md");
    let name = regex_lite::Regex::new(r"^`(otp_sidecar_[a-z0-9_]+)`$").unwrap();
    let documented: BTreeSet<String> = table_rows(&section(&page, "## Metrics"))
        .iter()
        .map(|cells| {
            name.captures(cells[0])
                .unwrap_or_else(|| panic!("a metrics row without a metric name: {cells:?}"))[1]
                .to_owned()
        })
        .collect();
    let undocumented: Vec<_> = exported.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "metrics exported but missing from docs/operations.md: {undocumented:?}"
    );
    // The traffic above made these appear (else the check above checked little).
    for expected in [
        "otp_sidecar_calls_total",
        "otp_sidecar_rate_limited_total",
        "otp_sidecar_blocked_total",
        "otp_sidecar_context_ignored_total",
        "otp_sidecar_caller_calls_total",
        "otp_sidecar_reloads_total",
    ] {
        assert!(
            exported.contains(expected),
            "{expected} not exported:\n{text}"
        );
    }

    // A documented metric this scrape did not show (it appears with its first sample) must at
    // least be registered: its name, without the prefix and a counter's `_total`, is a string
    // in a source file that registers metrics.
    let sources: String = rust_files(&repo_file("src"))
        .iter()
        .map(|f| std::fs::read_to_string(f).expect("source readable"))
        .filter(|source| source.contains("Registry"))
        .collect();
    assert!(
        !sources.is_empty(),
        "no source under src/ registers metrics"
    );
    for metric in documented.difference(&exported) {
        let short = metric.trim_start_matches("otp_sidecar_");
        let registered = short.strip_suffix("_total").unwrap_or(short);
        assert!(
            sources.contains(&format!("\"{registered}\"")),
            "docs/operations.md documents {metric}, which the daemon does not register"
        );
    }
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as dashes.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(page: &str) -> BTreeSet<String> {
    let mut in_code = false;
    let mut found = BTreeSet::new();
    for line in page.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        } else if !in_code && line.starts_with('#') {
            found.insert(anchor(line.trim_start_matches('#')));
        }
    }
    found
}

#[test]
fn every_relative_link_between_the_pages_lands_on_a_file_and_a_heading() {
    let link = regex_lite::Regex::new(r"\]\(([^)\s]+)\)").unwrap();
    let mut pages = vec![PathBuf::from("README.md")];
    for entry in std::fs::read_dir(repo_file("docs")).expect("docs/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "md") {
            pages.push(Path::new("docs").join(path.file_name().expect("name")));
        }
    }
    assert!(pages.len() >= 9, "pages: {pages:?}");
    let mut checked = 0;
    let mut broken = Vec::new();
    for page in &pages {
        let text = read(&page.to_string_lossy());
        let dir = page.parent().unwrap_or(Path::new(""));
        for c in link.captures_iter(&text) {
            let target = &c[1];
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (file, fragment) = target.split_once('#').unwrap_or((target, ""));
            let file_path = if file.is_empty() {
                page.clone()
            } else {
                dir.join(file)
            };
            checked += 1;
            // Read as bytes: a link may name an image.
            let linked = std::fs::read(repo_file(&file_path.to_string_lossy()));
            let Ok(linked) = linked.map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            else {
                broken.push(format!("{}: {target} (no such file)", page.display()));
                continue;
            };
            if !fragment.is_empty()
                && file_path.extension().is_some_and(|e| e == "md")
                && !anchors(&linked).contains(fragment)
            {
                broken.push(format!("{}: {target} (no such heading)", page.display()));
            }
        }
    }
    assert!(checked >= 30, "only {checked} relative links");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}
