//! SMS text: a template per locale, the WebOTP / autofill line, the code's lifetime as
//! ValidityPeriod and {minutes}, and warnings for templates that cost more than one GSM-7 SMS.

use crate::common::*;

#[tokio::test]
async fn the_callers_locale_picks_the_template_and_the_autofill_line_ends_it() {
    let twilio = twilio_answering(created(SID)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("otp-sidecar.toml");
    std::fs::write(
        &config,
        "body_template = 'Your code is {otp}, valid {minutes} min'\n\
         otp_lifetime_secs = 300\n\
         webotp_domain = 'login.example.com'\n\
         [templates]\n\
         nl = 'Uw code is {otp}'\n\
         de-DE = 'Ihr Code lautet {otp}'\n",
    )
    .unwrap();
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default().args([
            format!("--config={}", config.display()),
            // A flag adds a locale (and would replace the file's for the same one).
            "--template=pt-BR=Seu código é {otp}".to_owned(),
        ]),
    );
    let mut client = daemon.unix_client().await;
    let cases = [
        (Some("nl-NL"), format!("Uw code is {OTP}")),
        (Some("de_de"), format!("Ihr Code lautet {OTP}")),
        (Some("pt-BR"), format!("Seu código é {OTP}")),
        (Some("fr-FR"), format!("Your code is {OTP}, valid 5 min")),
        (None, format!("Your code is {OTP}, valid 5 min")),
    ];
    for (locale, body) in &cases {
        let ctx = match locale {
            Some(l) => context(&[("locale", l)]),
            None => rmpv::Value::Nil,
        };
        assert_eq!(
            send_with(&mut client, PHONE, ctx).await,
            Ok(SID.into()),
            "{locale:?}"
        );
        let sent = sends(&twilio).await.pop().unwrap();
        let expected = format!("{body}\n\n@login.example.com #{OTP}");
        assert_eq!(field(&sent, "Body").as_deref(), Some(expected.as_str()));
        // The lifetime is the ValidityPeriod when none is set.
        assert_eq!(field(&sent, "ValidityPeriod").as_deref(), Some("300"));
    }
    // The Portuguese template needs UCS-2: said once at start.
    let warning = daemon.wait_for_log("template pt-br: UCS-2");
    assert!(warning.contains("'ó'"), "{warning}");
    assert_eq!(daemon.count_log("template "), 1, "{}", daemon.log());
}

#[tokio::test]
async fn a_long_template_is_warned_about_and_bad_templates_stop_the_start() {
    let twilio = twilio_answering(created(SID)).await;
    let long = format!("{} {{otp}}", "Please use this code to sign in. ".repeat(6));
    let daemon = Daemon::start(
        &twilio.uri(),
        Options::default().arg(format!("--body-template={long}")),
    );
    let warning = daemon.wait_for_log("template default");
    assert!(warning.contains("GSM-7, 2 segments"), "{warning}");

    // check reports what each template costs and the validity period the lifetime gives.
    let out = command()
        .args([
            "check",
            "--dry-run",
            "--template=pt=Seu código é {otp}",
            "--otp-lifetime-secs=300",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in [
        "  template default: GSM-7, 1 segment with a 6-digit code",
        "  template pt: UCS-2 because of 'ó', 1 segment with a 6-digit code",
        "  validity:     300 s",
    ] {
        assert!(stdout.lines().any(|l| l == line), "{line:?} in:\n{stdout}");
    }

    for bad in [
        "--body-template=Code {otp}, {minutes} min",
        "--template=en US=Code {otp}",
        "--template=nl=Geen code",
        "--webotp-domain=https://login.example.com",
        "--otp-lifetime-secs=0",
    ] {
        let out = command()
            .args(["check", "--dry-run", bad])
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bad} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("template") || stderr.contains("webotp") || stderr.contains("lifetime"),
            "{bad}: {stderr}"
        );
    }
}
