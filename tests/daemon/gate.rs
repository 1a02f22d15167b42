//! irules/ltm_otp_gate.tcl under tclsh (tests/irules/gate.tcl: stand-ins for HTTP::*,
//! CRYPTO::sign, class and the sideband commands on real sockets) against the real daemon:
//! the page, "send me a code" (issueOTP), a wrong code, the right one and its signed cookie,
//! the cookie letting requests through (and a forged, expired or another number's not),
//! the lock, the daemon down, a redirect off the site refused, the phone from a data group,
//! and no code or whole number in any log line of the rule.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use aws_lc_rs::hmac;
use base64::Engine;

use crate::codes::code_in_sms;
use crate::common::*;

pub(crate) const SECRET: &str = "gate-secret-0123456789abcdef0123456789";

pub(crate) struct Gate {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

#[derive(Debug)]
pub(crate) struct Reply {
    pub kind: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub logs: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn unb64(s: &str) -> String {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A Tcl word: braced (the tests' values hold no braces, backslashes or newlines).
fn word(s: &str) -> String {
    assert!(!s.contains(['{', '}', '\\', '\n']), "{s}");
    format!("{{{s}}}")
}

impl Gate {
    /// The rule, with the daemon at `dest` and `settings` (static:: names without prefix).
    pub fn start(dest: &str, settings: &[(&str, &str)]) -> Gate {
        let mut child = Command::new("tclsh")
            .arg(repo_file("tests/irules/gate.tcl"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("tclsh runs");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut gate = Gate {
            child,
            stdin,
            stdout,
        };
        let mut all = vec![
            ("gate_dest", dest),
            ("gate_secret", SECRET),
            ("gate_sender", "ACME"),
        ];
        all.extend_from_slice(settings);
        for (name, value) in all {
            writeln!(gate.stdin, "set {name} {}", word(value)).unwrap();
        }
        gate
    }

    pub fn request(
        &mut self,
        method: &str,
        uri: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        let headers: Vec<String> = headers
            .iter()
            .flat_map(|(k, v)| [word(k), word(v)])
            .collect();
        let line = format!(
            "request {method} {} {{{}}} {}",
            word(uri),
            headers.join(" "),
            word(body)
        );
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
        let mut out = String::new();
        self.stdout.read_line(&mut out).unwrap();
        let fields: Vec<&str> = out.trim_end_matches('\n').split('\t').collect();
        assert_eq!(fields.len(), 5, "{out}");
        let headers = unb64(fields[2])
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let reply = Reply {
            kind: fields[0].to_owned(),
            status: fields[1].parse().unwrap_or(0),
            headers,
            body: unb64(fields[3]),
            logs: unb64(fields[4]),
        };
        assert_ne!(reply.kind, "error", "the rule failed: {}", reply.logs);
        reply
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const HOST: &str = "gate.test";

/// The gate's headers for the standard phone, and a cookie when given.
fn as_user(cookie: Option<&str>) -> Vec<(&str, &str)> {
    let mut headers = vec![("Host", HOST), ("X-User-Mobile", PHONE)];
    if let Some(cookie) = cookie {
        headers.push(("Cookie", cookie));
    }
    headers
}

/// A cookie value the rule would sign for `phone` until `expiry` (the test knows the secret).
fn signed(expiry: u64, phone: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, SECRET.as_bytes());
    let tag = hmac::sign(&key, format!("v1|{expiry}|{phone}").as_bytes());
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag.as_ref());
    format!("otp_gate={expiry}.{sig}")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_gate_sends_checks_and_signs_in() {
    let twilio = twilio_answering(created(SID)).await;
    let daemon = Daemon::start(&twilio.uri(), Options::default().arg("--max-attempts=3"));
    let mut gate = Gate::start(&daemon.tcp.to_string(), &[]);
    let mut logs = String::new();

    // No cookie: the page, with the number masked and both forms.
    let page = gate.request("GET", "/app/report?id=7", &as_user(None), "");
    assert_eq!(
        (page.kind.as_str(), page.status),
        ("respond", 200),
        "{page:?}"
    );
    assert!(page.body.contains("+*******5678"), "{}", page.body);
    assert!(page.body.contains(r#"value="/app/report?id=7""#));
    assert!(
        page.body.contains(r#"<label for="code">"#)
            && page.body.contains("autocomplete=\"one-time-code\"")
    );
    assert_eq!(page.header("Cache-Control"), Some("no-store"));
    assert!(
        sends(&twilio).await.is_empty(),
        "a visit alone sends nothing"
    );

    // "Send me a code": issueOTP.
    let post = |body: &str| body.to_owned();
    let sent = gate.request(
        "POST",
        "/.otp-gate",
        &as_user(None),
        &post("back=%2Fapp%2Freport%3Fid%3D7&action=send"),
    );
    assert!(sent.body.contains("A code is on its way"), "{}", sent.body);
    logs += &sent.logs;
    let code = code_in_sms(&twilio, 0).await;

    // A wrong code: told so, on the page.
    let wrong_code = crate::codes::wrong(&code);
    let wrong = gate.request(
        "POST",
        "/.otp-gate",
        &as_user(None),
        &format!("back=%2Fapp&code={wrong_code}&action=check"),
    );
    assert!(
        wrong.body.contains("That code is not right"),
        "{}",
        wrong.body
    );
    assert!(wrong.body.contains(r#"role="alert""#));
    logs += &wrong.logs;

    // The right code: a signed cookie and back where the user was going.
    let right = gate.request(
        "POST",
        "/.otp-gate",
        &as_user(None),
        &format!("back=%2Fapp%2Freport%3Fid%3D7&code={code}&action=check"),
    );
    assert_eq!(right.status, 303, "{right:?}");
    assert_eq!(right.header("Location"), Some("/app/report?id=7"));
    let set_cookie = right.header("Set-Cookie").unwrap().to_owned();
    for part in [
        "otp_gate=",
        "; Path=/",
        "; Max-Age=28800",
        "; Secure",
        "; HttpOnly",
        "; SameSite=Strict",
    ] {
        assert!(set_cookie.contains(part), "{set_cookie}");
    }
    logs += &right.logs;
    let cookie = set_cookie.split(';').next().unwrap().to_owned();

    // With it, requests pass to the pool; forged, expired or another number's do not.
    assert_eq!(
        gate.request("GET", "/app", &as_user(Some(&cookie)), "")
            .kind,
        "pass"
    );
    let mut forged = cookie.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(
        gate.request("GET", "/app", &as_user(Some(&forged)), "")
            .status,
        200
    );
    let expired = signed(1_000_000_000, PHONE);
    assert_eq!(
        gate.request("GET", "/app", &as_user(Some(&expired)), "")
            .status,
        200
    );
    let fresh = signed(4_000_000_000, PHONE);
    assert_eq!(
        gate.request("GET", "/app", &as_user(Some(&fresh)), "").kind,
        "pass"
    );
    let other = [
        ("Host", HOST),
        ("X-User-Mobile", "+31612345679"),
        ("Cookie", cookie.as_str()),
    ];
    assert_eq!(gate.request("GET", "/app", &other, "").status, 200);

    // The code was good once.
    let again = gate.request(
        "POST",
        "/.otp-gate",
        &as_user(None),
        &format!("code={code}&action=check"),
    );
    assert!(
        again.body.contains("That code is not right"),
        "{}",
        again.body
    );

    // Wrong codes lock: the page says so.
    gate.request("POST", "/.otp-gate", &as_user(None), "action=send");
    let next = code_in_sms(&twilio, 1).await;
    let bad = crate::codes::wrong(&next);
    for _ in 0..2 {
        gate.request(
            "POST",
            "/.otp-gate",
            &as_user(None),
            &format!("code={bad}&action=check"),
        );
    }
    let locked = gate.request(
        "POST",
        "/.otp-gate",
        &as_user(None),
        &format!("code={bad}&action=check"),
    );
    assert!(
        locked.body.contains("Too many wrong codes"),
        "{}",
        locked.body
    );
    logs += &locked.logs;

    // Only paths on this site are gone back to.
    gate.request("POST", "/.otp-gate", &as_user(Some("x=1")), "action=send")
        .body
        .contains("on its way");
    let last_code = code_in_sms(&twilio, 2).await;
    let other_phone = [("Host", HOST), ("X-User-Mobile", PHONE)];
    let off_site = gate.request(
        "POST",
        "/.otp-gate",
        &other_phone,
        "back=%2F%2Fevil.example%2F&code=000000&action=check",
    );
    assert!(off_site.body.contains("value=\"/\""), "{}", off_site.body);
    let _ = last_code;

    // A form posted from another site is refused.
    let cross = [
        ("Host", HOST),
        ("X-User-Mobile", PHONE),
        ("Origin", "https://evil.example"),
    ];
    assert_eq!(
        gate.request("POST", "/.otp-gate", &cross, "action=send")
            .status,
        403
    );
    // Three messages (an accepted code also sends its message's Feedback, not counted here).
    let messages = sends(&twilio)
        .await
        .into_iter()
        .filter(|r| r.url.path().ends_with("/Messages.json"))
        .count();
    assert_eq!(messages, 3);

    // No code and no whole number in the rule's log lines.
    for secret in [
        code.as_str(),
        next.as_str(),
        wrong_code.as_str(),
        "612345678",
    ] {
        assert!(!logs.contains(secret), "{secret} in:\n{logs}");
    }
    assert!(logs.contains("+*******5678"), "{logs}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_phone_from_a_data_group_and_the_daemon_down() {
    let twilio = twilio_answering(created(SID)).await;
    let daemon = Daemon::start(&twilio.uri(), Options::default());
    let mut gate = Gate::start(&daemon.tcp.to_string(), &[("gate_phone_class", "users")]);
    let alice = [("Host", HOST), ("X-Remote-User", "alice")];
    let page = gate.request("GET", "/", &alice, "");
    assert!(page.body.contains("+*******5678"), "{}", page.body);
    let sent = gate.request("POST", "/.otp-gate", &alice, "action=send");
    assert!(sent.body.contains("on its way"), "{}", sent.body);
    code_in_sms(&twilio, 0).await;
    // A user the data group does not know, or a header naming a number: no page, no text.
    let stranger = [
        ("Host", HOST),
        ("X-Remote-User", "mallory"),
        ("X-User-Mobile", PHONE),
    ];
    let refused = gate.request("POST", "/.otp-gate", &stranger, "action=send");
    assert_eq!(refused.status, 403);
    assert_eq!(sends(&twilio).await.len(), 1);

    let mut down = Gate::start(&dead_address().to_string(), &[]);
    let reply = down.request("POST", "/.otp-gate", &as_user(None), "action=send");
    assert!(
        reply.body.contains("The code service is unavailable"),
        "{}",
        reply.body
    );
    let reply = down.request(
        "POST",
        "/.otp-gate",
        &as_user(None),
        "code=123456&action=check",
    );
    assert!(
        reply.body.contains("The code service is unavailable"),
        "{}",
        reply.body
    );
}
