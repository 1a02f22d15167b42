//! The BIG-IP side against the real daemon: the ILX forwarder under Node with a stand-in
//! f5-nodejs, and the APM iRules under tclsh with stand-ins for the iRule commands.

use crate::common::*;
use wiremock::matchers::{body_string_contains, method, path};
use wiremock::{Mock, MockServer};

/// Twilio: 201 for every number but +31600000000, which Twilio calls invalid (21211, in
/// Twilio's words, which name the number), and
/// +31600000002, not a mobile (21614) in words that are not ASCII; a call's SID for calls.
async fn twilio() -> MockServer {
    let server = twilio_except(
        Mock::given(method("POST"))
            .and(body_string_contains("To=%2B31600000000"))
            .respond_with(twilio_error(
                400,
                21211,
                "The 'To' number +31600000000 is not a valid phone number.",
            )),
    )
    .await;
    Mock::given(method("POST"))
        .and(body_string_contains("To=%2B31600000002"))
        .respond_with(twilio_error(
            400,
            21614,
            "Le num\u{e9}ro \u{ab} To \u{bb} n\u{2019}est pas un mobile",
        ))
        .with_priority(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path(format!("/2010-04-01/Accounts/{AC}/Calls.json")))
        .respond_with(created("CA0123456789abcdef0123456789abcdef"))
        .with_priority(2)
        .mount(&server)
        .await;
    server
}

/// The caller token the iRules' and the forwarder's token settings are tested with.
const CALLER_TOKEN: &str = "tok-irule-7a6b5c4d3e2f1a0b9c8d";

fn assert_ran(out: std::process::Output, what: &str) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{what} failed:\n{stdout}\n{stderr}");
    // The per-case lines, for --nocapture runs.
    println!("{stdout}");
}

/// Runs the ILX forwarder's tests (`tests/ilx/forwarder.test.js`, under the harness beside it)
/// on the Node.js binary `node`, which must say it is `version` when one is given.
async fn forwarder_tests_on(node: &std::path::Path, version: Option<&str>) {
    let twilio = twilio().await;
    let runtime = version.map_or_else(
        || format!("{} (from PATH)", node.display()),
        |v| format!("Node.js {v}"),
    );
    let out = tokio::process::Command::new(node)
        .arg(repo_file("tests/ilx/forwarder.test.js"))
        .env("OTP_SIDECAR_BIN", env!("CARGO_BIN_EXE_otp-sidecar"))
        .env("TWILIO_MOCK_URL", twilio.uri())
        .env("NODE_PATH", repo_file("tests/ilx/stubs"))
        .output()
        .await
        .unwrap_or_else(|e| panic!("cannot run {runtime}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if let Some(version) = version {
        assert!(
            stdout.contains(&format!("# node v{version}\n")),
            "{} is not Node.js {version}:\n{stdout}",
            node.display()
        );
    }
    assert_ran(out, &format!("the ILX forwarder's tests on {runtime}"));
}

/// A Node.js that iRulesLX runs, where `tests/witness/install.sh` puts it.
fn appliance_node(version: &str) -> std::path::PathBuf {
    let node = witness_dir().join(format!("node-{version}/bin/node"));
    assert!(
        node.is_file(),
        "Node.js {version}, which iRulesLX runs, is not installed at {}: run tests/witness/install.sh (bash .ci/run does)",
        node.display()
    );
    node
}

/// What the ILX forwarder must not use: Node.js 6.9.1 lacks it, or (subarray) has it in a
/// form that breaks Buffer code. The tests on 6.9.1 catch what they run; this catches the rest.
const NODE_7_PLUS: &[(&str, &str)] = &[
    (
        r"\.subarray\(",
        "Buffer#subarray (a plain Uint8Array on Node 6)",
    ),
    (r"\b(readBig|writeBig|BigInt)\w*", "BigInt (Node 10.4/12)"),
    (r"\b\d+n\b", "BigInt literals"),
    (r"\b(async|await)\b", "async/await (Node 7.6)"),
    (r"\?\.|\?\?", "?. and ?? (Node 14)"),
    (r"\*\*", "the ** operator (Node 7)"),
    (r"\{\s*\.\.\.", "object spread (Node 8.3)"),
    (
        r",\s*\)",
        "a trailing comma in a call or parameter list (Node 8)",
    ),
    (
        r"\bObject\.(entries|values|fromEntries|getOwnPropertyDescriptors)\b",
        "Object.entries/values (Node 7)",
    ),
    (
        r"\.(padStart|padEnd|flat|flatMap|finally|trimStart|trimEnd|replaceAll)\(",
        "String/Array/Promise methods after Node 6",
    ),
];

/// JavaScript with comments and string literals blanked out (template literals kept).
fn js_code_of(js: &str) -> String {
    let mut code = String::new();
    let mut chars = js.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        code.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                let mut last = ' ';
                for c in chars.by_ref() {
                    if c == '\n' {
                        code.push('\n');
                    }
                    if last == '*' && c == '/' {
                        break;
                    }
                    last = c;
                }
            }
            '\'' | '"' => {
                code.push(c);
                let mut escaped = false;
                for s in chars.by_ref() {
                    match (escaped, s) {
                        (true, _) => escaped = false,
                        (false, '\\') => escaped = true,
                        (false, q) if q == c => break,
                        _ => {}
                    }
                }
                code.push(c);
            }
            _ => code.push(c),
        }
    }
    code
}

fn node_7_plus_in(js: &str) -> Option<(&'static str, usize)> {
    // Module names are strings, which the code below no longer has.
    let node_prefix = regex_lite::Regex::new(r#"require\(\s*['"]node:"#).expect("pattern");
    if let Some(m) = node_prefix.find(js) {
        let line = js[..m.start()].lines().count();
        return Some(("node: module names (Node 14.18)", line));
    }
    let code = js_code_of(js);
    NODE_7_PLUS.iter().find_map(|(pattern, what)| {
        let re = regex_lite::Regex::new(pattern).expect("pattern");
        re.find(&code)
            .map(|m| (*what, code[..m.start()].lines().count()))
    })
}

#[test]
fn ilx_forwarder_uses_only_what_node_6_9_1_has() {
    let path = repo_file("irules/ilx/otp_sidecar_forwarder/index.js");
    let js = std::fs::read_to_string(&path).expect("the forwarder");
    if let Some((what, line)) = node_7_plus_in(&js) {
        panic!("{} uses {what} near line {line}", path.display());
    }
}

#[test]
fn the_node_check_catches_what_it_should() {
    for bad in [
        "this.buffer = this.buffer.subarray(r[1]);",
        "Number(buf.readBigUInt64BE(pos + 1))",
        "const n = 10n;",
        "async function f() { await g(); }",
        "const x = a?.b ?? c;",
        "f(a,\n  b,\n);",
        "const o = { ...p };",
        "Object.entries(o)",
        "p.finally(done)",
        "require('node:net')",
    ] {
        assert!(node_7_plus_in(bad).is_some(), "{bad}");
    }
    let fine = "// subarray, async, 10n, ?? in a comment\n/* await */ const s = 'a?.b, f(x,)';\n\
                const b = Buffer.concat([a, c]).slice(1); f(a, b); const t = `${x}`;";
    assert_eq!(node_7_plus_in(fine), None);
}

/// iRulesLX's Node.js on most BIG-IPs: no Buffer#subarray that returns a Buffer, no BigInt.
#[tokio::test]
async fn ilx_forwarder_on_node_6_9_1() {
    forwarder_tests_on(&appliance_node("6.9.1"), Some("6.9.1")).await;
}

/// iRulesLX's Node.js on later BIG-IP versions.
#[tokio::test]
async fn ilx_forwarder_on_node_8_11_1() {
    forwarder_tests_on(&appliance_node("8.11.1"), Some("8.11.1")).await;
}

/// The host's own Node.js (the current LTS).
#[tokio::test]
async fn ilx_forwarder_on_the_current_node() {
    forwarder_tests_on(std::path::Path::new("node"), None).await;
}

/// Both APM iRules, with the ILX forwarder behind `ILX::call` run by iRulesLX's Node 6.9.1.
#[tokio::test]
async fn apm_irules_under_tclsh_with_node_6_9_1() {
    apm_irules_under_tclsh(&appliance_node("6.9.1")).await;
}

/// The same on the Node.js of later BIG-IP versions.
#[tokio::test]
async fn apm_irules_under_tclsh_with_node_8_11_1() {
    apm_irules_under_tclsh(&appliance_node("8.11.1")).await;
}

/// The same on the host's own Node.js.
#[tokio::test]
async fn apm_irules_under_tclsh_with_the_current_node() {
    apm_irules_under_tclsh(std::path::Path::new("node")).await;
}

/// Runs `tests/irules/run.tcl` against real daemons; `node` runs the forwarder behind `ILX::call`.
async fn apm_irules_under_tclsh(node: &std::path::Path) {
    let twilio = twilio().await;
    // Each case uses its own end-user address; two cases check that the third send from
    // one address is refused, which proves the iRules pass it on.
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default().arg("--rate-limit-ip=2/1m"),
    );
    let verify = Daemon::start(
        &twilio.uri(),
        Options::default().args([
            "--dry-run",
            "--verify-service-sid",
            "VA0123456789abcdef0123456789abcdef",
        ]),
    );
    // The same with a caller tokens file: each rule's token setting must reach it.
    let tokens = tempfile::tempdir().unwrap();
    let tokens_file = tokens.path().join("callers");
    std::fs::write(&tokens_file, format!("bigip-a {CALLER_TOKEN}\n")).unwrap();
    let with_tokens = Daemon::start(
        &twilio.uri(),
        Options::default().args([
            "--dry-run",
            "--verify-service-sid",
            "VA0123456789abcdef0123456789abcdef",
            "--caller-tokens-file",
            tokens_file.to_str().unwrap(),
        ]),
    );
    // One send per user an hour: a user name's bytes are the key (one daemon per iRule).
    let users_sb = Daemon::start(
        &twilio.uri(),
        Options::default().arg("--rate-limit-user=1/1h"),
    );
    let users_ilx = Daemon::start(
        &twilio.uri(),
        Options::default().arg("--rate-limit-user=1/1h"),
    );
    // Accepts connections (the kernel completes them) but never reads or answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let out = tokio::process::Command::new("tclsh")
        .arg(repo_file("tests/irules/run.tcl"))
        .env("OTP_SIDECAR_UNIX", &daemon.unix)
        .env("OTP_SIDECAR_TCP", daemon.tcp.to_string())
        .env("DOWN_ADDR", dead_address().to_string())
        .env("SILENT_ADDR", silent.local_addr().unwrap().to_string())
        .env("VERIFY_UNIX", &verify.unix)
        .env("VERIFY_TCP", verify.tcp.to_string())
        .env("TOKENS_UNIX", &with_tokens.unix)
        .env("TOKENS_TCP", with_tokens.tcp.to_string())
        .env("CALLER_TOKEN", CALLER_TOKEN)
        .env("USERS_SB_TCP", users_sb.tcp.to_string())
        .env("USERS_ILX_UNIX", &users_ilx.unix)
        .env("ILX_NODE", node)
        .output()
        .await
        .expect("run tclsh");
    assert_ran(
        out,
        &format!("tclsh tests/irules/run.tcl (ILX_NODE={})", node.display()),
    );
    let log = with_tokens.log();
    assert!(log.contains("caller=\"bigip-a\""), "{log}");
    assert!(!log.contains(CALLER_TOKEN), "{log}");
}

/// Commands, syntax and subcommands that arrived after Tcl 8.4, which iRules run.
const TCL_85_PLUS: &[(&str, &str)] = &[
    (r"\bdict\b", "dict"),
    (r"\{\*\}", "{*}"),
    (r"\blassign\b", "lassign"),
    (r"\blrepeat\b", "lrepeat"),
    (r"\blreverse\b", "lreverse"),
    (r"\bapply\b", "apply"),
    (r"\bchan\b", "chan"),
    (r"\btry\b", "try"),
    (r"\blmap\b", "lmap"),
    (r"\b(tailcall|coroutine|yield|zlib)\b", "8.6 commands"),
    (r"\bbinary\s+(encode|decode)\b", "binary encode/decode"),
    (
        r"\bstring\s+(cat|reverse|is\s+entier)\b",
        "string cat/reverse/is entier",
    ),
    (
        r"\bclock\s+(milliseconds|microseconds)\b",
        "clock milliseconds",
    ),
    (
        r"\blsearch\s+[^\n]*-(index|nocase|subindices|bisect)\b",
        "lsearch 8.5 options",
    ),
    (r"\blsort\s+[^\n]*-(indices|nocase)\b", "lsort 8.5 options"),
    (r"\s(in|ni)\s", "the in/ni operators"),
    (r"\*\*", "the ** operator"),
    // Not 8.5+, but disabled in iRules: the rules encode UTF-8 themselves.
    (r"\bencoding\b", "encoding (disabled in iRules)"),
];

/// An iRule with comments and string literals blanked out, so prose cannot trip the check.
fn code_of(tcl: &str) -> String {
    let uncommented: Vec<&str> = tcl
        .lines()
        .map(|l| {
            if l.trim_start().starts_with('#') {
                ""
            } else {
                l
            }
        })
        .collect();
    let mut code = String::new();
    let mut in_string = false;
    let mut escaped = false;
    for c in uncommented.join("\n").chars() {
        match (in_string, escaped, c) {
            (_, true, _) => escaped = false,
            (_, false, '\\') => escaped = true,
            (_, false, '"') => in_string = !in_string,
            (true, false, _) => continue,
            _ => {}
        }
        code.push(c);
    }
    code
}

#[test]
fn irules_use_only_tcl_8_4() {
    let dir = repo_file("irules");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("tcl") {
            continue;
        }
        let code = code_of(&std::fs::read_to_string(&path).unwrap());
        for (pattern, what) in TCL_85_PLUS {
            let re = regex_lite::Regex::new(pattern).unwrap();
            if let Some(m) = re.find(&code) {
                let line = code[..m.start()].lines().count();
                panic!(
                    "{} uses {what}, which iRules (Tcl 8.4) lack, near line {line}",
                    path.display()
                );
            }
        }
        checked += 1;
    }
    assert!(
        checked >= 3,
        "expected the ILX, sideband and LTM gate iRules in {}",
        dir.display()
    );
}

#[test]
fn the_tcl_check_catches_what_it_should() {
    for bad in [
        "set d [dict create]",
        "foo {*}$args",
        "lassign $l a b",
        "if {$x in $l} {}",
        "set t [clock milliseconds]",
        "set b [encoding convertto utf-8 $s]",
    ] {
        let code = code_of(bad);
        assert!(
            TCL_85_PLUS
                .iter()
                .any(|(p, _)| regex_lite::Regex::new(p).unwrap().is_match(&code)),
            "{bad}"
        );
    }
    let fine = "# a dict in a comment\nlog local0. \"try this in the lab\"\nset x [list a b]";
    let code = code_of(fine);
    assert!(!TCL_85_PLUS
        .iter()
        .any(|(p, _)| regex_lite::Regex::new(p).unwrap().is_match(&code)));
}
