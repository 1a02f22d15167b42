//! After the 201: each message's fate. A sent SMS is handed to the [`Tracker`] (a bounded
//! queue: the call never waits for it), which learns its status by polling the message on a
//! schedule that ends with the code's lifetime (`poll`) or from Twilio's signed status
//! callbacks (`callback`); logs, counts and records each final status; and, when configured,
//! follows a message that cannot arrive with one voice call reading the same code
//! (`followup`). The code for that call stays in the memory of the instance that sent it,
//! in the message's own task, until the lifetime ends.

pub mod callback;
mod fate;
mod followup;
mod poll;
mod records;
mod schedule;
mod signature;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;

use crate::metrics::METRICS;
use crate::state::Store;
use crate::twilio::credentials::Secret;
use crate::twilio::TwilioClient;
pub use fate::{Fate, Status};
pub use followup::FollowUp;
use records::Records;

/// The code's lifetime when `otp_lifetime_secs` is unset.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);
/// Messages followed at once; past it a message is not tracked (counted).
const MAX_TRACKED: usize = 10_000;
/// Sent messages waiting to be picked up by the tracker's task.
const QUEUE: usize = 1024;
/// Polls in flight at once.
const POLLS_IN_FLIGHT: usize = 4;

/// How the fate is learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Poll,
    Callback,
    Off,
}

/// The status callback listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackSettings {
    /// The URL as Twilio posts to it (the signature covers it).
    pub url: url::Url,
    pub listen: SocketAddr,
    /// The account's auth token: the signature's key.
    pub token: Secret,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub mode: Mode,
    /// The code's lifetime: polls and records end with it.
    pub lifetime: Duration,
    pub voice_on_undelivered: bool,
    pub callback: Option<CallbackSettings>,
}

/// `otp_lifetime_secs`, or [`DEFAULT_LIFETIME`].
pub fn lifetime(secs: Option<u32>) -> Duration {
    secs.map_or(DEFAULT_LIFETIME, |s| Duration::from_secs(s.into()))
}

/// Where a tracked message's status is asked: the Twilio client of the provider that sent it
/// (the backend implements it; a reload leaves a tracked message with the clients it had).
pub trait Clients: Send + Sync {
    /// The provider at `index` (0 the primary).
    fn client(&self, index: usize) -> Option<&TwilioClient>;
}

/// One message sent, to be followed.
pub struct Sent {
    pub sid: String,
    /// E.164; kept in the message's task only (masked when logged).
    pub phone: String,
    pub clients: Arc<dyn Clients>,
    pub provider: usize,
    /// The voice follow-up, when one may be placed (the code inside it).
    pub follow_up: Option<FollowUp>,
    pub at: Instant,
}

/// What is called with each final status (the seam the pumping guard's conversion figures
/// are connected to): the number it went to (E.164) and the fate.
pub type OnFinal = Box<dyn Fn(&str, &Fate) + Send + Sync>;

pub struct Tracker {
    settings: Settings,
    records: Records,
    queue: Option<mpsc::Sender<Sent>>,
    tracked: AtomicUsize,
    polls: Semaphore,
    /// Messages waiting for a status callback, by SID.
    waiting: Mutex<HashMap<String, oneshot::Sender<Fate>>>,
    on_final: OnceLock<OnFinal>,
}

impl Tracker {
    /// A tracker; with a mode other than off, its task is spawned (a runtime is needed).
    pub fn new(settings: Settings, store: Option<Arc<Store>>) -> Arc<Tracker> {
        let (queue, sent) = match settings.mode {
            Mode::Off => (None, None),
            _ => {
                let (queue, sent) = mpsc::channel(QUEUE);
                (Some(queue), Some(sent))
            }
        };
        let tracker = Arc::new(Tracker {
            records: Records::new(store, settings.lifetime),
            settings,
            queue,
            tracked: AtomicUsize::new(0),
            polls: Semaphore::new(POLLS_IN_FLIGHT),
            waiting: Mutex::new(HashMap::new()),
            on_final: OnceLock::new(),
        });
        if let Some(sent) = sent {
            tokio::spawn(Arc::clone(&tracker).run(sent));
        }
        tracker
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Whether sent messages are followed at all.
    pub fn active(&self) -> bool {
        self.queue.is_some()
    }

    /// The StatusCallback URL each message carries, in callback mode.
    pub fn callback_url(&self) -> Option<&str> {
        match (self.settings.mode, &self.settings.callback) {
            (Mode::Callback, Some(callback)) => Some(callback.url.as_str()),
            _ => None,
        }
    }

    /// Whether a follow-up call may be prepared for messages (the code kept for it).
    pub fn follows_up(&self) -> bool {
        self.active() && self.settings.voice_on_undelivered
    }

    /// Connects what each final status feeds (once; the pumping guard's `undelivered`).
    pub fn on_final_status(&self, hook: OnFinal) {
        let _ = self.on_final.set(hook);
    }

    /// Hands a sent message over; never waits. A full queue drops it (counted).
    pub fn track(&self, sent: Sent) {
        let Some(queue) = &self.queue else {
            return;
        };
        if queue.try_send(sent).is_err() {
            METRICS.count_delivery_event("untracked");
        }
    }

    /// A confirmation (confirmOTP/checkOTP succeeded): by SID (`SM…`) or phone (E.164). No
    /// follow-up call is placed for a confirmed code.
    pub fn mark_confirmed(&self, target: &str) {
        if crate::twilio::is_sid(target, "SM") {
            self.records.confirm_sid(target);
        } else {
            self.records.confirm_phone(target);
        }
    }

    /// The last status known of `sid` (`queued`, `delivered`, `undelivered 30003`,
    /// `calling CA…`), here or, with a shared store, from any instance.
    pub async fn status(&self, sid: &str) -> Option<String> {
        self.records.get(sid).await
    }

    async fn run(self: Arc<Self>, mut sent: mpsc::Receiver<Sent>) {
        while let Some(message) = sent.recv().await {
            if self.tracked.fetch_add(1, Ordering::Relaxed) >= MAX_TRACKED {
                self.tracked.fetch_sub(1, Ordering::Relaxed);
                METRICS.count_delivery_event("untracked");
                continue;
            }
            self.records.set(&message.sid, "queued".to_owned());
            let tracker = Arc::clone(&self);
            tokio::spawn(async move {
                tracker.follow(message).await;
                tracker.tracked.fetch_sub(1, Ordering::Relaxed);
            });
        }
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
