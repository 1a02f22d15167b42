//! The `otp-sidecar` command: serve | send | confirm | status | issue | verify | ping | check.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use otp_sidecar::app;
use otp_sidecar::client::{Client, Endpoint};
use otp_sidecar::config::{self, Options, Settings, DEFAULT_UNIX};

/// `println!` that never panics: a closed stdout (`otp-sidecar ping | grep -q ok`) is not an
/// error of ours, and the exit status stays the one the reply decided.
macro_rules! out {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `eprintln!` that never panics either.
macro_rules! err {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

/// Sends one-time passwords by SMS through Twilio, for BIG-IP APM access policies.
///
/// Callers speak MessagePack-RPC over a Unix socket or TCP: sendOTP(otp, phone, sender)
/// answers with the Twilio message SID ("SM…") or an error string starting with "ERR ".
/// In Verify mode (--verify-service-sid) it answers with the verification SID ("VE…"), and
/// confirmOTP(phone or VE…) tells Twilio the user entered the right code. Without a code of
/// its own, a caller has the daemon draw one: issueOTP(phone, sender), then checkOTP(phone, code).
///
/// Credentials come from TWILIO_ACCOUNT_SID with TWILIO_AUTH_TOKEN (or TWILIO_API_KEY and
/// TWILIO_API_SECRET), from files named in the config, or from systemd's
/// $CREDENTIALS_DIRECTORY — never from the command line.
#[derive(Debug, Parser)]
#[command(name = "otp-sidecar", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon.
    Serve(Options),
    /// Send one OTP through a running daemon and print its reply.
    ///
    /// Exit status: 0 for a SID, 1 for an ERR reply, 2 when the daemon could not be asked.
    Send {
        /// The one-time password (4-12 letters or digits).
        otp: String,
        /// The recipient, E.164 (+14155550100).
        phone: String,
        /// E.164 number, alphanumeric sender ID, or Messaging Service SID (MG…).
        sender: String,
        #[command(flatten)]
        context: ContextArgs,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// Tell a running daemon that the user entered the right code, and print its reply: the
    /// approved verification's SID (VE…) in Verify mode, the message's SID (SM…) otherwise.
    ///
    /// Exit status: 0 for a SID, 1 for an ERR reply, 2 when the daemon could not be asked.
    Confirm {
        /// The phone number the code went to (E.164), or the VE… SID sendOTP answered.
        target: String,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// Ask a running daemon what became of a message: its last known status (queued, sent,
    /// delivered, undelivered 30003, calling CA… when a voice follow-up was placed).
    ///
    /// Exit status: 0 for a status, 1 for an ERR reply (ERR not_found: unknown SID), 2 when
    /// the daemon could not be asked.
    Status {
        /// The message's SID (SM…) sendOTP answered.
        sid: String,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// Have a running daemon draw a code and send it (issueOTP); print the SID.
    ///
    /// Exit status: 0 for a SID, 1 for an ERR reply, 2 when the daemon could not be asked.
    Issue {
        /// The recipient, E.164 (+14155550100).
        phone: String,
        /// E.164 number, alphanumeric sender ID, or Messaging Service SID (MG…).
        sender: String,
        #[command(flatten)]
        context: ContextArgs,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// Check a code issueOTP sent (checkOTP); print OK.
    ///
    /// Exit status: 0 for OK, 1 for an ERR reply (wrong, expired, locked), 2 when the daemon
    /// could not be asked.
    Verify {
        /// The phone number the code went to (E.164).
        phone: String,
        /// The code the user entered.
        code: String,
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// Ask a running daemon how it is: mode, uptime, connections, calls in flight and the
    /// last exchange with Twilio.
    ///
    /// Exit status: 0 healthy, 1 degraded (the last exchange with Twilio failed for a reason
    /// of Twilio's or the network's), 2 when the daemon could not be asked.
    Ping {
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// Validate the configuration and credentials without sending anything.
    Check(CheckArgs),
}

/// `check`: the options of `serve`, and whether to ask Twilio.
#[derive(Debug, Args)]
struct CheckArgs {
    /// Also ask Twilio whether the credentials work (a GET of the account, and of the Verify
    /// service in Verify mode; nothing is sent). Exit 1 when refused or unreachable.
    #[arg(long)]
    online: bool,
    #[command(flatten)]
    serve: Options,
}

/// The optional caller context (sendOTP's fourth argument), as an iRule would pass it.
#[derive(Debug, Args)]
struct ContextArgs {
    /// The end user's IP address (counted by the per-IP rate limit).
    #[arg(long, value_name = "ADDR")]
    ip: Option<String>,
    /// The user name (counted by the per-user rate limit).
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
    /// The user's language tag, e.g. en-US.
    #[arg(long, value_name = "TAG")]
    locale: Option<String>,
    /// sms or voice (a call that reads the code out).
    #[arg(long, value_name = "CHANNEL")]
    channel: Option<String>,
    /// The caller token the daemon's caller tokens file names: from the environment only (a
    /// token on the command line would show in `ps`).
    #[arg(skip = caller_token())]
    token: Option<String>,
}

/// `OTP_SIDECAR_CALLER_TOKEN`, as the ILX forwarder reads it.
fn caller_token() -> Option<String> {
    std::env::var("OTP_SIDECAR_CALLER_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
}

impl ContextArgs {
    /// The context map, or nothing when no field is given (a three-argument call).
    fn param(self) -> Option<rmpv::Value> {
        let entries: Vec<(rmpv::Value, rmpv::Value)> = [
            ("ip", self.ip),
            ("user", self.user),
            ("locale", self.locale),
            ("channel", self.channel),
            ("token", self.token),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k.into(), v.into())))
        .collect();
        (!entries.is_empty()).then_some(rmpv::Value::Map(entries))
    }
}

/// Where the running daemon listens.
#[derive(Debug, Args)]
struct DaemonArgs {
    /// The daemon's Unix socket.
    #[arg(long, env = "OTP_SIDECAR_UNIX", value_name = "PATH", default_value = DEFAULT_UNIX)]
    unix: std::path::PathBuf,
    /// The daemon's TCP address (used instead of --unix).
    #[arg(long, value_name = "ADDR")]
    tcp: Option<std::net::SocketAddr>,
    /// Give up after this many ms (then exit 2).
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    timeout_ms: u64,
    /// Speak TLS to --tcp, checking the daemon's certificate against this CA (PEM).
    #[arg(long, value_name = "PATH", requires = "tcp")]
    tls_ca: Option<std::path::PathBuf>,
    /// The name the daemon's certificate must carry. [default: the --tcp address]
    #[arg(long, value_name = "NAME", requires = "tls_ca")]
    tls_server_name: Option<String>,
    /// Mutual TLS: present this client certificate (PEM), with --tls-client-key.
    #[arg(long, value_name = "PATH", requires_all = ["tls_ca", "tls_client_key"])]
    tls_client_cert: Option<std::path::PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "PATH", requires = "tls_client_cert")]
    tls_client_key: Option<std::path::PathBuf>,
}

impl DaemonArgs {
    fn endpoint(&self) -> Endpoint {
        match self.tcp {
            Some(addr) => Endpoint::Tcp(addr),
            None => Endpoint::Unix(self.unix.clone()),
        }
    }

    /// The TLS settings, when --tls-ca is given; errors name the file, never its content.
    fn tls(&self) -> Result<Option<otp_sidecar::client::Tls>> {
        let (Some(ca), Some(addr)) = (&self.tls_ca, self.tcp) else {
            return Ok(None);
        };
        let read = |path: &std::path::Path| {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
        };
        let client = match (&self.tls_client_cert, &self.tls_client_key) {
            (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
            _ => None,
        };
        Ok(Some(otp_sidecar::client::Tls {
            ca_pem: read(ca)?,
            server_name: self
                .tls_server_name
                .clone()
                .unwrap_or_else(|| addr.ip().to_string()),
            client,
        }))
    }
}

/// Parses the command line. Env values are never shown in `--help` (a proxy's or an API
/// URL's password would be), and an empty env var counts as unset.
fn parse() -> Cli {
    for (name, value) in std::env::vars_os() {
        let ours = name.to_str().is_some_and(|n| {
            n.starts_with("OTP_SIDECAR_")
                || n.starts_with("TWILIO_")
                || n == "CREDENTIALS_DIRECTORY"
        });
        if ours && value.is_empty() {
            // Single-threaded still: nothing else reads the environment yet.
            std::env::remove_var(&name);
        }
    }
    fn hide(cmd: clap::Command) -> clap::Command {
        cmd.mut_args(|a| a.hide_env_values(true))
            .mut_subcommands(hide)
    }
    let matches = hide(Cli::command()).get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // The daemon's options as the user gave them: clap's defaults are the bottom layer, under
    // the config file, not above it.
    let explicit = match (&mut cli.command, matches.subcommand()) {
        (Command::Serve(options), Some((_, sub))) => Options::explicit(sub).map(|o| *options = o),
        (Command::Check(check), Some((_, sub))) => Options::explicit(sub).map(|o| check.serve = o),
        _ => Ok(()),
    };
    if let Err(e) = explicit {
        err!("otp-sidecar: {e:#}");
        std::process::exit(2);
    }
    cli
}

fn main() -> ExitCode {
    match parse().command {
        Command::Serve(args) => {
            // Uptime counts from here, not from the first health call.
            app::start_clock();
            // Settings first: they say how to log and how many threads the runtime gets.
            let settings = match Settings::resolve(&args, &env_var) {
                Ok(s) => s,
                Err(e) => return exit_on_error(Err(e)),
            };
            otp_sidecar::logging::init(settings.log_format);
            for warning in &settings.warnings {
                tracing::warn!("{warning}");
            }
            let single = settings.threads == 1;
            match runtime(settings.threads) {
                Ok(rt) => {
                    // The one runtime thread is this one: its log lines wait for the runtime
                    // to go idle (the park hook writes them), so replies leave first.
                    if single {
                        otp_sidecar::logging::defer_on_this_thread();
                    }
                    let outcome = rt.block_on(app::run(args, settings));
                    // Tasks dropped with the runtime may still write a call's line.
                    drop(rt);
                    otp_sidecar::logging::flush_pending();
                    exit_on_error(outcome)
                }
                Err(e) => exit_on_error(Err(e.into())),
            }
        }
        Command::Check(args) => {
            exit_on_error(check(&args.serve).and_then(|()| check_online(&args)))
        }
        Command::Send {
            otp,
            phone,
            sender,
            context,
            daemon,
        } => {
            let mut params = vec![otp.into(), phone.into(), sender.into()];
            params.extend(context.param());
            ask_blocking(&daemon, "sendOTP", params, show_reply)
        }
        Command::Confirm { target, daemon } => ask_blocking(
            &daemon,
            "confirmOTP",
            with_token(vec![target.into()]),
            show_reply,
        ),
        Command::Status { sid, daemon } => ask_blocking(
            &daemon,
            "deliveryStatus",
            with_token(vec![sid.into()]),
            show_reply,
        ),
        Command::Issue {
            phone,
            sender,
            context,
            daemon,
        } => {
            let mut params = vec![phone.into(), sender.into()];
            params.extend(context.param());
            ask_blocking(&daemon, "issueOTP", params, show_reply)
        }
        Command::Verify {
            phone,
            code,
            daemon,
        } => {
            let params = with_token(vec![phone.into(), code.into()]);
            ask_blocking(&daemon, "checkOTP", params, show_reply)
        }
        Command::Ping { daemon } => ask_blocking(&daemon, "health", vec![], show_health),
    }
}

/// One thread runs on the plain scheduler, with no work-stealing bookkeeping at all.
fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    match threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .on_thread_park(otp_sidecar::logging::flush_pending)
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    }
}

fn exit_on_error(result: Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            err!("otp-sidecar: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `params` and, with a caller token, the context map that carries it: confirmOTP's,
/// deliveryStatus's and checkOTP's last argument is read only for the token.
fn with_token(mut params: Vec<rmpv::Value>) -> Vec<rmpv::Value> {
    if let Some(token) = caller_token() {
        params.push(rmpv::Value::Map(vec![("token".into(), token.into())]));
    }
    params
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn check(args: &Options) -> Result<()> {
    let settings = Settings::resolve(args, &env_var)?;
    // What serve would refuse at start: the socket's directory, the TLS roots…
    app::preflight(&settings)?;
    for warning in &settings.warnings {
        err!("otp-sidecar: warning: {warning}");
    }
    let _ = std::io::stdout()
        .lock()
        .write_all(config::report(&settings).as_bytes());
    Ok(())
}

/// `check --online`: one line per question put to Twilio; an error when any fails.
fn check_online(args: &CheckArgs) -> Result<()> {
    if !args.online {
        return Ok(());
    }
    let settings = Settings::resolve(&args.serve, &env_var)?;
    let verdicts = runtime(1)?.block_on(app::check_online(&settings));
    for (line, _) in &verdicts {
        println!("{line}");
    }
    anyhow::ensure!(
        verdicts.iter().all(|(_, ok)| *ok),
        "Twilio did not accept the configuration"
    );
    Ok(())
}

/// [`ask`] on a runtime of its own; exit 2 when not even that can start.
fn ask_blocking(
    daemon: &DaemonArgs,
    method: &str,
    params: Vec<rmpv::Value>,
    show: fn(&rmpv::Value) -> ExitCode,
) -> ExitCode {
    match runtime(1) {
        Ok(rt) => rt.block_on(ask(daemon, method, params, show)),
        Err(e) => {
            err!("otp-sidecar: cannot start the runtime: {e}");
            ExitCode::from(2)
        }
    }
}

/// Makes one call and prints the reply with `show`, which picks the exit status for a result.
/// Exit 1 for an ERR reply, 2 when the daemon could not be asked.
async fn ask(
    daemon: &DaemonArgs,
    method: &str,
    params: Vec<rmpv::Value>,
    show: fn(&rmpv::Value) -> ExitCode,
) -> ExitCode {
    let endpoint = daemon.endpoint();
    let tls = match daemon.tls() {
        Ok(tls) => tls,
        Err(e) => {
            err!("otp-sidecar: {e:#}");
            return ExitCode::from(2);
        }
    };
    let call = async {
        let mut client = match (&tls, daemon.tcp) {
            (Some(tls), Some(addr)) => Client::connect_tls(addr, tls).await?,
            _ => Client::connect(&endpoint).await?,
        };
        client.call(method, params).await
    };
    match tokio::time::timeout(Duration::from_millis(daemon.timeout_ms), call).await {
        Ok(Ok(Ok(value))) => show(&value),
        Ok(Ok(Err(error))) => {
            out!("{error}");
            ExitCode::from(1)
        }
        Ok(Err(e)) => {
            err!("otp-sidecar: {e}");
            ExitCode::from(2)
        }
        Err(_) => {
            err!(
                "otp-sidecar: no answer from {endpoint} within {} ms",
                daemon.timeout_ms
            );
            ExitCode::from(2)
        }
    }
}

/// A plain result: the SID (or whatever the method answered) on one line.
fn show_reply(value: &rmpv::Value) -> ExitCode {
    out!("{}", otp_sidecar::client::plain(value));
    ExitCode::SUCCESS
}

/// The health map, one `key: value` line each; exit 1 when the daemon says it is degraded.
fn show_health(value: &rmpv::Value) -> ExitCode {
    let (lines, healthy) = otp_sidecar::client::health_lines(value);
    for line in lines {
        out!("{line}");
    }
    if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
