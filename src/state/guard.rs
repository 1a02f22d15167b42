//! The guards' round trip (`gcra.lua`): resend dedup, the cooldown, the pumping guard and the
//! rate limits of one send, decided and charged at once; and what a send and a confirmation
//! leave behind (`record.lua`, `tally.lua`).

use std::time::Duration;

use tokio::time::Instant;

use super::{micros, Failed, Limit, Store};

/// What the script checks besides the limits.
#[derive(Default)]
pub struct Watch {
    /// The phone-and-code key, when dedup is on.
    pub dedup: Option<String>,
    /// The number's cooldown streak key and the waits, when a cooldown is set.
    pub cooldown: Option<(String, Vec<Duration>)>,
    /// The pumping guard, when it is on and the country is not exempt.
    pub pumping: Option<Pumped>,
}

/// The pumping guard's side of a send.
pub struct Pumped {
    pub enforce: bool,
    pub bucket: Duration,
    pub min_sends: u64,
    pub min_percent: u32,
    pub block: Duration,
    /// The trickle's emission interval and window; `None`: nothing through.
    pub trickle: Option<(Duration, Duration)>,
    /// How long a subject's counts live after its last send (the window).
    pub window: Duration,
    /// The country's key, then the range's.
    pub subjects: Vec<String>,
}

/// What the script decided.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Charged. `monitored`: the subject that would have refused (monitor mode).
    Admitted {
        monitored: Option<usize>,
        episodes: u64,
    },
    /// Limit `index` refuses for this long.
    Limited(usize, Duration, u64),
    /// The same phone and code went out as this SID.
    Duplicate(String),
    /// Watched subject `index` is throttled.
    Throttled(usize, u64),
    /// The cooldown refuses for this long.
    Cooldown(Duration),
}

impl Store {
    /// Checks and charges one send in one round trip (atomic across instances). A refusal
    /// charges nothing, and so does a script the store runs only after this call stopped
    /// waiting for it (a store paused, then resumed).
    pub async fn gcra(
        &self,
        limits: &[Limit],
        watch: &Watch,
        until: Instant,
    ) -> Result<Verdict, Failed> {
        let (held, budget) = self.hold("rate", until)?;
        let mut invocation = self.gcra.prepare_invoke();
        invocation
            .arg(self.clock.store_time(Instant::now() + budget))
            .arg(limits.len());
        for limit in limits {
            invocation
                .key(&limit.key)
                .arg(micros(limit.interval))
                .arg(micros(limit.window));
        }
        match &watch.dedup {
            Some(key) => invocation.key(key).arg(1),
            None => invocation.arg(0),
        };
        match &watch.cooldown {
            Some((key, waits)) => {
                invocation.key(key).arg(waits.len());
                for wait in waits {
                    invocation.arg(micros(*wait));
                }
            }
            None => {
                invocation.arg(0);
            }
        }
        match &watch.pumping {
            Some(p) => {
                let (interval, burst) = p.trickle.unwrap_or_default();
                invocation
                    .arg(if p.enforce { 2 } else { 1 })
                    .arg(micros(p.bucket).max(1))
                    .arg(p.min_sends)
                    .arg(p.min_percent)
                    .arg(micros(p.block))
                    .arg(micros(interval))
                    .arg(micros(burst))
                    .arg(millis(p.window))
                    .arg(p.subjects.len());
                for key in &p.subjects {
                    invocation.key(key);
                }
            }
            None => {
                invocation
                    .arg(0)
                    .arg(1)
                    .arg(0)
                    .arg(0)
                    .arg(0)
                    .arg(0)
                    .arg(0)
                    .arg(0)
                    .arg(0);
            }
        }
        let mut connection = held.connection.clone();
        let (code, n, sid, episodes): (i64, u64, Option<String>, u64) = self
            .attempt(
                "rate",
                &held,
                budget,
                invocation.invoke_async(&mut connection),
            )
            .await?;
        let index = |n: u64| usize::try_from(n).unwrap_or(usize::MAX).saturating_sub(1);
        match code {
            0 => Ok(Verdict::Admitted {
                monitored: (n > 0).then(|| index(n)),
                episodes,
            }),
            -2 => Ok(Verdict::Duplicate(sid.unwrap_or_default())),
            -3 => Ok(Verdict::Throttled(index(n), episodes)),
            -4 => Ok(Verdict::Cooldown(Duration::from_micros(n))),
            i if i > 0 => Ok(Verdict::Limited(
                index(i as u64),
                Duration::from_micros(n),
                episodes,
            )),
            // Only when this host's idea of the store's clock is off: charged nothing.
            _ => Err(Failed(
                "answered that the call's deadline had passed".into(),
            )),
        }
    }

    /// Keeps what a send went out as for `lifetime`: `record` under the phone's and the SID's
    /// keys, the SID under the phone-and-code key (dedup), and a send in the cooldown streak.
    /// Runs after the reply: bounded by the store's own timeout only.
    pub async fn record_sent(
        &self,
        keys: [&str; 4],
        record: &str,
        sid: &str,
        lifetime: Duration,
        streak_lasts: Duration,
    ) -> Result<(), Failed> {
        let (held, budget) = self.hold("set", Instant::now() + self.settings.timeout)?;
        let mut invocation = self.record.prepare_invoke();
        for key in keys {
            invocation.key(key);
        }
        invocation
            .arg(millis(lifetime))
            .arg(record)
            .arg(sid)
            .arg(millis(streak_lasts));
        let mut connection = held.connection.clone();
        self.attempt(
            "set",
            &held,
            budget,
            invocation.invoke_async::<i64>(&mut connection),
        )
        .await
        .map(|_| ())
    }

    /// Counts a confirmation (`field` `c`) or an undelivered message (`s`) for `subjects` in
    /// the current bucket; with `once` (a key), only the first time it is asked. Whether it
    /// was counted.
    #[allow(clippy::too_many_arguments)]
    pub async fn tally(
        &self,
        once: Option<(&str, Duration)>,
        subjects: &[String],
        field: &str,
        bucket: Duration,
        window: Duration,
        until: Instant,
    ) -> Result<bool, Failed> {
        let (held, budget) = self.hold("set", until)?;
        let mut invocation = self.tally.prepare_invoke();
        invocation.key(once.map_or("", |(key, _)| key));
        for key in subjects {
            invocation.key(key);
        }
        invocation
            .arg(micros(bucket).max(1))
            .arg(field)
            .arg(millis(window))
            .arg(once.map_or(1, |(_, lasts)| millis(lasts)));
        let mut connection = held.connection.clone();
        let counted: i64 = self
            .attempt(
                "set",
                &held,
                budget,
                invocation.invoke_async(&mut connection),
            )
            .await?;
        Ok(counted == 1)
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}
