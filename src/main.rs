//! The `otp-sidecar` command: serve | send | ping | check.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use otp_sidecar::backend::{Backend, DrySids};
use otp_sidecar::client::{Client, Endpoint};
use otp_sidecar::config::{ServeArgs, Settings, DEFAULT_UNIX};
use otp_sidecar::methods::Dispatcher;
use otp_sidecar::server::Listeners;
use otp_sidecar::twilio::TwilioClient;

/// Sends one-time passwords by SMS through Twilio, for BIG-IP APM access policies.
///
/// Callers speak MessagePack-RPC over a Unix socket or TCP: sendOTP(otp, phone, sender)
/// answers with the Twilio message SID ("SM…") or an error string starting with "ERR ".
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
    Serve(ServeArgs),
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
        daemon: DaemonArgs,
    },
    /// Check that a running daemon answers (exit 0 if it does, 2 if not).
    Ping {
        #[command(flatten)]
        daemon: DaemonArgs,
    },
    /// Validate the configuration and credentials without sending anything.
    Check(ServeArgs),
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
    /// Give up after this many ms.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    timeout_ms: u64,
}

impl DaemonArgs {
    fn endpoint(&self) -> Endpoint {
        match self.tcp {
            Some(addr) => Endpoint::Tcp(addr),
            None => Endpoint::Unix(self.unix.clone()),
        }
    }
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve(args) => {
            otp_sidecar::logging::init();
            // Settings first: they say how many threads the runtime gets.
            let settings = match Settings::resolve(&args, &env_var) {
                Ok(s) => s,
                Err(e) => return exit_on_error(Err(e)),
            };
            match runtime(settings.threads) {
                Ok(rt) => exit_on_error(rt.block_on(serve(settings))),
                Err(e) => exit_on_error(Err(e.into())),
            }
        }
        Command::Check(args) => exit_on_error(check(&args)),
        Command::Send {
            otp,
            phone,
            sender,
            daemon,
        } => {
            let params = vec![otp.into(), phone.into(), sender.into()];
            ask_blocking(&daemon, "sendOTP", params)
        }
        Command::Ping { daemon } => ask_blocking(&daemon, "ping", vec![]),
    }
}

/// One thread runs on the plain scheduler, with no work-stealing bookkeeping at all.
fn runtime(threads: usize) -> std::io::Result<tokio::runtime::Runtime> {
    match threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
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
            eprintln!("otp-sidecar: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn env_var(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

async fn serve(settings: Settings) -> Result<()> {
    let backend = match &settings.credentials {
        Some(credentials) if !settings.dry_run => {
            tracing::info!(twilio = %settings.twilio_api_url, "sending through {}", credentials.describe());
            Backend::Twilio(TwilioClient::new(&settings, credentials)?)
        }
        _ => {
            tracing::warn!(
                "DRY RUN: no SMS will be sent; every sendOTP answers with a made-up SM… SID"
            );
            Backend::DryRun(DrySids::default())
        }
    };
    let dispatcher = Arc::new(Dispatcher::new(&settings, backend));
    // Registered before the listeners exist, so a SIGTERM that follows "ready" at once (as
    // systemd may send) stops the daemon cleanly instead of killing it.
    let shutdown = shutdown_signal()?;
    let listeners = Listeners::bind(&settings.unix, settings.tcp).await?;
    let tcp = listeners
        .tcp_addr()
        .map_or_else(|| "off".to_owned(), |a| a.to_string());
    tracing::info!(
        unix = %listeners.unix_path().display(),
        tcp = %tcp,
        deadline_ms = settings.deadline.as_millis() as u64,
        "otp-sidecar {} ready",
        env!("CARGO_PKG_VERSION")
    );
    listeners
        .serve(dispatcher, settings.max_frame_bytes, shutdown)
        .await;
    tracing::info!("stopped");
    Ok(())
}

/// Installs the SIGTERM and SIGINT handlers now; the future completes on either.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    })
}

fn check(args: &ServeArgs) -> Result<()> {
    let settings = Settings::resolve(args, &env_var)?;
    println!("configuration OK");
    println!("  unix socket:  {}", settings.unix.display());
    println!(
        "  tcp:          {}",
        settings
            .tcp
            .map_or_else(|| "off".to_owned(), |a| a.to_string())
    );
    println!("  twilio api:   {}", settings.twilio_api_url);
    println!("  deadline:     {} ms", settings.deadline.as_millis());
    println!("  threads:      {}", settings.threads);
    match (&settings.credentials, settings.dry_run) {
        (_, true) => println!("  mode:         DRY RUN (nothing is sent)"),
        (Some(c), false) => println!("  credentials:  {}", c.describe()),
        (None, false) => {}
    }
    Ok(())
}

/// [`ask`] on a runtime of its own; exit 2 when not even that can start.
fn ask_blocking(daemon: &DaemonArgs, method: &str, params: Vec<rmpv::Value>) -> ExitCode {
    match runtime(1) {
        Ok(rt) => rt.block_on(ask(daemon, method, params)),
        Err(e) => {
            eprintln!("otp-sidecar: cannot start the runtime: {e}");
            ExitCode::from(2)
        }
    }
}

/// Makes one call and prints the reply. Exit 0 for a result, 1 for an ERR reply, 2 when the
/// daemon could not be asked.
async fn ask(daemon: &DaemonArgs, method: &str, params: Vec<rmpv::Value>) -> ExitCode {
    let endpoint = daemon.endpoint();
    let call = async {
        let mut client = Client::connect(&endpoint).await?;
        client.call(method, params).await
    };
    match tokio::time::timeout(Duration::from_millis(daemon.timeout_ms), call).await {
        Ok(Ok(Ok(value))) => {
            println!(
                "{}",
                value
                    .as_str()
                    .map_or_else(|| value.to_string(), str::to_owned)
            );
            ExitCode::SUCCESS
        }
        Ok(Ok(Err(error))) => {
            println!("{error}");
            ExitCode::from(1)
        }
        Ok(Err(e)) => {
            eprintln!("otp-sidecar: {e}");
            ExitCode::from(2)
        }
        Err(_) => {
            eprintln!(
                "otp-sidecar: no answer from {endpoint} within {} ms",
                daemon.timeout_ms
            );
            ExitCode::from(2)
        }
    }
}
