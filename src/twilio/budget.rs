//! The Twilio request budget: per account, at most `max` requests in flight across Messages,
//! Calls, Verify and Lookup (Twilio caps concurrent requests per account and answers 429 past
//! it), handed out in arrival order.
//!
//! A request starts only when its answer can still reach the caller: it must be admitted by
//! `deadline - p90`, where p90 is learned from recent answers. A call whose wait ahead already
//! leaves no time is answered busy at once; one that waited in line past its last moment is
//! answered busy then. Either way nothing was sent, so no SMS goes to a caller that has given
//! up.
//!
//! A 429 is a signal for everyone: the budget halves (at most once per round trip), honours
//! `Retry-After` (capped by `twilio_max_retry_after_secs`, so a hostile or broken upstream
//! cannot switch sends off for an hour) by admitting nothing until then, and grows back by one slot per budget-full of
//! answers without a 429 (AIMD). An answer's `Twilio-Concurrent-Requests` (the account's
//! requests in flight as Twilio counts them, other senders' included) shrinks it to the share
//! the others leave.
//!
//! The answer-time estimate only moves when an answer arrives. When it leaves no room (a
//! deadline under the first guess, a reload shortening the deadline below the learned p90)
//! nothing would ever be sent again, so nothing would be learned: after [`PROBE_INTERVAL`]
//! without an answer, one request is let through anyway, a probe. Its caller is answered as
//! any other: the SID if the answer comes in time, `ERR timeout` if it does not.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::error::{Error, Shed};
use crate::metrics::METRICS;
use crate::slots::{Slot, Slots};

/// What answer times are assumed before any has been seen.
pub const FIRST_GUESS: Duration = Duration::from_millis(250);

/// How long without an answer before one request is let through although the estimate says
/// it cannot be answered in time. 10 s: far below anything Twilio limits or a storm sends, so
/// a probe costs nothing measurable; at most one caller in 10 s risks a late answer; and the
/// estimate (down 1/16 per faster answer) recovers from the first guess within a minute.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(10);

/// The default cap on a 429's pause (`twilio_max_retry_after_secs`).
pub const DEFAULT_MAX_RETRY_AFTER: Duration = Duration::from_secs(5);

pub struct Budget {
    slots: Slots,
    /// The account as its metrics name it (`ACfe…ce`).
    account: String,
    max: usize,
    /// Slots now: `max`, less while backing off a 429.
    size: AtomicUsize,
    /// Answers since the size last grew.
    grown: AtomicUsize,
    /// Requests waiting in line.
    waiting: AtomicUsize,
    /// Set while a Retry-After holds admissions (so the quiet path takes no lock).
    paused: AtomicBool,
    /// Answer times, µs: a running mean and a running 90th percentile.
    mean_us: AtomicU64,
    p90_us: AtomicU64,
    /// The longest a 429's Retry-After may hold admissions, ms (a reload may change it).
    max_retry_after_ms: AtomicU64,
    /// Set from a 429 until the next answer without one: its Retry-After is logged once.
    in_429: AtomicBool,
    /// When an answer last arrived or a probe went out: ms since `born`, plus
    /// [`PROBE_INTERVAL`] (so that before any answer a probe may go at once).
    heard_ms: AtomicU64,
    born: Instant,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// No request starts before this (Twilio's Retry-After).
    paused_until: Option<Instant>,
    /// When the size was last halved.
    cut_at: Option<Instant>,
}

/// What an answer tells the budget.
#[derive(Debug, Default, Clone, Copy)]
pub struct Answered {
    /// A POST's answer: its time is what a caller's deadline waits for (a GET of the account
    /// answers faster).
    pub timed: bool,
    /// HTTP 429.
    pub too_many: bool,
    pub retry_after: Option<Duration>,
    /// `Twilio-Concurrent-Requests`, when the answer had it.
    pub concurrent: Option<usize>,
}

/// A slot for one request; dropping it frees the slot. Report the answer with
/// [`Budget::answered`].
pub struct Ticket<'a> {
    _slot: Slot<'a>,
    started: Instant,
}

impl Ticket<'_> {
    /// When the request could start.
    pub fn started(&self) -> Instant {
        self.started
    }
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budget")
            .field("max", &self.max)
            .field("size", &self.size())
            .finish_non_exhaustive()
    }
}

/// The busy answer: nothing was sent.
fn busy(shed: Shed) -> Error {
    METRICS.count_shed(shed.label());
    Error::Busy(shed)
}

impl Budget {
    /// The budget of `account` (as metrics name it: `ACfe…ce`).
    pub fn new(max: usize, account: String) -> Budget {
        METRICS.set_budget_size(&account, max);
        let guess = FIRST_GUESS.as_micros() as u64;
        Budget {
            slots: Slots::new(METRICS.budget_in_use_gauge(&account)),
            account,
            max,
            size: AtomicUsize::new(max),
            grown: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            paused: AtomicBool::new(false),
            mean_us: AtomicU64::new(guess),
            p90_us: AtomicU64::new(guess),
            max_retry_after_ms: AtomicU64::new(DEFAULT_MAX_RETRY_AFTER.as_millis() as u64),
            in_429: AtomicBool::new(false),
            heard_ms: AtomicU64::new(0),
            born: Instant::now(),
            state: Mutex::new(State::default()),
        }
    }

    /// Caps the pause a 429's Retry-After imposes.
    pub fn set_max_retry_after(&self, cap: Duration) {
        let ms = cap.as_millis().min(u128::from(u64::MAX)) as u64;
        self.max_retry_after_ms.store(ms, Ordering::Relaxed);
    }

    /// The longest a 429's Retry-After may pause sends.
    pub fn max_retry_after(&self) -> Duration {
        Duration::from_millis(self.max_retry_after_ms.load(Ordering::Relaxed))
    }

    /// `at` on the clock of `heard_ms`.
    fn clock_ms(&self, at: Instant) -> u64 {
        let since = at.saturating_duration_since(self.born).as_millis() as u64;
        since + PROBE_INTERVAL.as_millis() as u64
    }

    pub fn max(&self) -> usize {
        self.max
    }

    pub fn size(&self) -> usize {
        self.size.load(Ordering::Relaxed)
    }

    /// How long an answer takes, nine times out of ten (as recently seen).
    pub fn p90(&self) -> Duration {
        Duration::from_micros(self.p90_us.load(Ordering::Relaxed))
    }

    fn mean(&self) -> Duration {
        Duration::from_micros(self.mean_us.load(Ordering::Relaxed))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for a request whose answer must be back by `deadline`, or busy.
    pub async fn admit(&self, deadline: Instant) -> Result<Ticket<'_>, Error> {
        let now = Instant::now();
        let last_start = deadline.checked_sub(self.p90()).unwrap_or(now);
        if last_start <= now {
            if let Some(ticket) = self.probe(now, deadline) {
                return Ok(ticket);
            }
            return Err(busy(Shed::NoTime));
        }
        let paused_until = match self.paused.load(Ordering::Relaxed) {
            false => None,
            true => self.paused_until(now),
        };
        let size = self.size();
        if paused_until.is_none() {
            if let Some(slot) = self.slots.try_take(size) {
                // No wait: the quiet path, with nothing more to count.
                return Ok(Ticket {
                    _slot: slot,
                    started: now,
                });
            }
        }
        // The line ahead drains `size` requests per answer time.
        let ahead = self.waiting.load(Ordering::Relaxed) as u32 + 1;
        let wait = self.mean() * ahead / size.max(1) as u32;
        if paused_until.unwrap_or(now) + wait > last_start {
            return Err(busy(Shed::Queue));
        }
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let _in_line = InLine(&self.waiting);
        let slot = async {
            if let Some(at) = paused_until {
                tokio::time::sleep_until(at).await;
            }
            self.slots.take(self.size()).await
        };
        match tokio::time::timeout_at(last_start, slot).await {
            Ok(slot) => Ok(self.ticket(slot, now)),
            Err(_) => Err(busy(Shed::Late)),
        }
    }

    /// A slot for a background request (a delivery poll) that takes nothing a send may need:
    /// none while a 429's pause holds or a request waits in line, and only while at least
    /// half the budget (one slot at the least) stays free for sends. `None`: try later.
    pub fn spare(&self) -> Option<Ticket<'_>> {
        let now = Instant::now();
        if self.paused.load(Ordering::Relaxed) && self.paused_until(now).is_some() {
            return None;
        }
        let size = self.size();
        let kept = (size / 2).max(1);
        if self.waiting.load(Ordering::Relaxed) > 0 || self.slots.taken() + kept >= size {
            return None;
        }
        let slot = self.slots.try_take(size)?;
        Some(Ticket {
            _slot: slot,
            started: now,
        })
    }

    /// A slot for a request the estimate says cannot be answered by `deadline`, when no answer
    /// has arrived for [`PROBE_INTERVAL`] and no other probe went out meanwhile: without it a
    /// deadline shorter than the estimate would refuse every send for good. Never while a
    /// 429's pause holds, nor past the budget.
    fn probe(&self, now: Instant, deadline: Instant) -> Option<Ticket<'_>> {
        if self.paused.load(Ordering::Relaxed) && self.paused_until(now).is_some() {
            return None;
        }
        let heard = self.heard_ms.load(Ordering::Relaxed);
        let at = self.clock_ms(now);
        if at < heard + PROBE_INTERVAL.as_millis() as u64 {
            return None;
        }
        // One probe per interval, whoever races for it.
        self.heard_ms
            .compare_exchange(heard, at, Ordering::Relaxed, Ordering::Relaxed)
            .ok()?;
        let slot = self.slots.try_take(self.size())?;
        tracing::info!(
            p90_ms = self.p90().as_millis() as u64,
            left_ms = deadline.saturating_duration_since(now).as_millis() as u64,
            "no Twilio answer for {} s and the learned answer time leaves no room before the \
             deadline: sending one request to learn it again (its caller gets ERR timeout if \
             the answer is late)",
            PROBE_INTERVAL.as_secs()
        );
        METRICS.count_budget_probe();
        Some(Ticket {
            _slot: slot,
            started: now,
        })
    }

    /// Until when a Retry-After holds admissions, if it still does.
    fn paused_until(&self, now: Instant) -> Option<Instant> {
        let mut state = self.state();
        let until = state.paused_until.filter(|&at| at > now);
        if until.is_none() {
            state.paused_until = None;
            self.paused.store(false, Ordering::Relaxed);
        }
        until
    }

    fn ticket<'a>(&'a self, slot: Slot<'a>, asked: Instant) -> Ticket<'a> {
        let started = Instant::now();
        METRICS.observe_budget_wait(started - asked);
        Ticket {
            _slot: slot,
            started,
        }
    }

    /// Learns from the answer to the request `ticket` was for, `took` after it started, and
    /// frees the slot.
    pub fn answered(&self, ticket: Ticket<'_>, took: Duration, answer: Answered) {
        // Counted as in flight when Twilio answered, this request included.
        let ours = self.slots.taken().max(1);
        let heard = self.clock_ms(ticket.started + took);
        drop(ticket);
        if answer.timed {
            self.learn(took);
            self.heard_ms.fetch_max(heard, Ordering::Relaxed);
        }
        if let Some(theirs) = answer.concurrent.map(|all| all.saturating_sub(ours)) {
            let share = self.max.saturating_sub(theirs);
            if theirs > 0 && share < self.size() {
                self.grown.store(0, Ordering::Relaxed);
                self.resize(share);
            }
        }
        if answer.too_many {
            METRICS.count_twilio_429();
            let cap = self.max_retry_after();
            if !self.in_429.swap(true, Ordering::Relaxed) {
                // Once per episode: a burst of 429s says the same thing many times.
                let asked = answer.retry_after.map(|d| d.as_secs());
                tracing::warn!(
                    retry_after_secs = asked,
                    paused_secs = asked.map(|a| a.min(cap.as_secs())),
                    max_retry_after_secs = cap.as_secs(),
                    "Twilio answered 429 (too many requests): sends pause for Retry-After, \
                     at most twilio_max_retry_after_secs; logged once until an answer without 429"
                );
            }
            self.back_off(answer.retry_after.map(|d| d.min(cap)));
        } else if self.size() < self.max {
            let size = self.size();
            if self.grown.fetch_add(1, Ordering::Relaxed) + 1 >= size {
                self.grown.store(0, Ordering::Relaxed);
                self.resize(size + 1);
            }
        }
        if !answer.too_many && self.in_429.load(Ordering::Relaxed) {
            self.in_429.store(false, Ordering::Relaxed);
        }
    }

    fn back_off(&self, retry_after: Option<Duration>) {
        let now = Instant::now();
        let mut state = self.state();
        if let Some(wait) = retry_after {
            let until = now + wait;
            state.paused_until = Some(state.paused_until.map_or(until, |at| at.max(until)));
            self.paused.store(true, Ordering::Relaxed);
        }
        // One cut per round trip: the 429s of one burst answer requests sent together.
        let recent = state.cut_at.is_some_and(|at| now < at + self.p90());
        if !recent {
            state.cut_at = Some(now);
            self.grown.store(0, Ordering::Relaxed);
            self.resize((self.size() / 2).max(1));
        }
    }

    fn resize(&self, size: usize) {
        let size = size.clamp(1, self.max);
        self.size.store(size, Ordering::Relaxed);
        METRICS.set_budget_size(&self.account, size);
    }

    /// A running mean (1/4 weight per answer) and a running p90: up by 9 steps on an answer
    /// above it, down by one below, each step 1/32 of the estimate, so it settles where one
    /// answer in ten is slower and follows a Twilio four times slower within six answers.
    /// (Capping a step up at the answer, as this once did, settles where one in four is.)
    fn learn(&self, took: Duration) {
        let us = took.as_micros().min(u128::from(u32::MAX)) as u64;
        let mean = self.mean_us.load(Ordering::Relaxed);
        let mean = mean - mean / 4 + us / 4;
        self.mean_us.store(mean, Ordering::Relaxed);
        let p90 = self.p90_us.load(Ordering::Relaxed);
        let step = (p90 / 32).max(50);
        let p90 = if us > p90 {
            p90 + 9 * step
        } else {
            p90.saturating_sub(step).max(us)
        };
        self.p90_us.store(p90, Ordering::Relaxed);
    }
}

/// Counts a request in line while it waits.
struct InLine<'a>(&'a AtomicUsize);

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
#[path = "budget_tests.rs"]
mod tests;
