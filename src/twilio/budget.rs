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
//! `Retry-After` by admitting nothing until then, and grows back by one slot per budget-full of
//! answers without a 429 (AIMD). An answer's `Twilio-Concurrent-Requests` (the account's
//! requests in flight as Twilio counts them, other senders' included) shrinks it to the share
//! the others leave.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::CallError;
use crate::metrics::{ReasonLabel, METRICS};
use crate::slots::{Slot, Slots};

/// What answer times are assumed before any has been seen.
const FIRST_GUESS: Duration = Duration::from_millis(250);

pub struct Budget {
    slots: Slots,
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
fn busy(reason: &'static str, detail: &str) -> CallError {
    METRICS.shed.get_or_create(&ReasonLabel { reason }).inc();
    CallError::Unavailable(format!("busy: {detail}"))
}

impl Budget {
    pub fn new(max: usize) -> Budget {
        METRICS.budget_size.set(max as i64);
        let guess = FIRST_GUESS.as_micros() as u64;
        Budget {
            slots: Slots::new(METRICS.budget_in_use.clone()),
            max,
            size: AtomicUsize::new(max),
            grown: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            paused: AtomicBool::new(false),
            mean_us: AtomicU64::new(guess),
            p90_us: AtomicU64::new(guess),
            state: Mutex::new(State::default()),
        }
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
    pub async fn admit(&self, deadline: Instant) -> Result<Ticket<'_>, CallError> {
        let now = Instant::now();
        let last_start = deadline.checked_sub(self.p90()).unwrap_or(now);
        if last_start <= now {
            return Err(busy(
                "no_time",
                "too little time left for Twilio to answer before the deadline",
            ));
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
            return Err(busy(
                "queue",
                "Twilio requests in flight leave no time to answer before the deadline",
            ));
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
            Err(_) => Err(busy(
                "late",
                "no Twilio request slot came free in time to answer before the deadline",
            )),
        }
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
        METRICS
            .budget_wait_seconds
            .observe((started - asked).as_secs_f64());
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
        drop(ticket);
        if answer.timed {
            self.learn(took);
        }
        if let Some(theirs) = answer.concurrent.map(|all| all.saturating_sub(ours)) {
            let share = self.max.saturating_sub(theirs);
            if theirs > 0 && share < self.size() {
                self.grown.store(0, Ordering::Relaxed);
                self.resize(share);
            }
        }
        if answer.too_many {
            METRICS.twilio_429.inc();
            self.back_off(answer.retry_after);
        } else if self.size() < self.max {
            let size = self.size();
            if self.grown.fetch_add(1, Ordering::Relaxed) + 1 >= size {
                self.grown.store(0, Ordering::Relaxed);
                self.resize(size + 1);
            }
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
        METRICS.budget_size.set(size as i64);
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
mod tests {
    use super::*;

    fn fine() -> Answered {
        Answered {
            timed: true,
            ..Answered::default()
        }
    }

    fn too_many() -> Answered {
        Answered {
            too_many: true,
            ..fine()
        }
    }

    fn retry_after(secs: u64) -> Answered {
        Answered {
            retry_after: Some(Duration::from_secs(secs)),
            ..too_many()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn others_on_the_account_leave_a_smaller_share() {
        let budget = Budget::new(100);
        let ticket = budget
            .admit(Instant::now() + Duration::from_secs(3))
            .await
            .unwrap();
        // Twilio counts 61 in flight, one of them ours: the others hold 60.
        let answer = Answered {
            concurrent: Some(61),
            ..fine()
        };
        budget.answered(ticket, Duration::from_millis(250), answer);
        assert_eq!(budget.size(), 40);
    }

    #[tokio::test(start_paused = true)]
    async fn the_p90_settles_where_one_answer_in_ten_is_slower() {
        let budget = Budget::new(10);
        // Answers spread evenly over 50..450 ms (a fixed pseudo-random order): once settled,
        // about one in ten must come slower than the estimate it meets.
        let mut seed = 12345u64;
        let mut answer = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            Duration::from_millis(50 + (seed >> 33) % 400)
        };
        for _ in 0..500 {
            budget.learn(answer());
        }
        let (mut slower, mut estimates) = (0, Vec::new());
        for _ in 0..4000 {
            let took = answer();
            slower += usize::from(took > budget.p90());
            budget.learn(took);
            estimates.push(budget.p90().as_millis());
        }
        let share = slower as f64 / estimates.len() as f64;
        assert!(
            (0.07..=0.13).contains(&share),
            "{share} slower than the p90"
        );
        // The true p90 is 410 ms; the estimate wanders around it.
        estimates.sort_unstable();
        let median = estimates[estimates.len() / 2];
        assert!((370..=450).contains(&median), "{median}");
        let mean = budget.mean().as_millis();
        assert!((150..=350).contains(&mean), "{mean}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_halves_the_budget_once_per_round_trip_and_answers_grow_it_back() {
        let budget = Budget::new(8);
        for _ in 0..3 {
            let ticket = budget.admit(Instant::now() + Duration::from_secs(3)).await;
            budget.answered(ticket.unwrap(), Duration::from_millis(250), too_many());
        }
        assert_eq!(budget.size(), 4, "a burst of 429s cuts once");
        tokio::time::advance(Duration::from_secs(1)).await;
        let ticket = budget.admit(Instant::now() + Duration::from_secs(3)).await;
        budget.answered(ticket.unwrap(), Duration::from_millis(250), too_many());
        assert_eq!(budget.size(), 2);
        for _ in 0..20 {
            let ticket = budget.admit(Instant::now() + Duration::from_secs(3)).await;
            budget.answered(ticket.unwrap(), Duration::from_millis(250), fine());
        }
        assert!(budget.size() > 2, "{}", budget.size());
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_cannot_be_answered_in_time_is_busy_at_once() {
        let budget = Budget::new(1);
        let first = budget
            .admit(Instant::now() + Duration::from_secs(3))
            .await
            .unwrap();
        // 250 ms per answer assumed, one ahead: a 300 ms deadline cannot be met.
        let started = Instant::now();
        let refused = budget
            .admit(Instant::now() + Duration::from_millis(300))
            .await;
        let error = refused.err().expect("busy").to_string();
        assert!(error.starts_with("ERR unavailable: busy"), "{error}");
        assert_eq!(
            started.elapsed(),
            Duration::ZERO,
            "answered without waiting"
        );
        drop(first);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_call_gets_the_slot_freed_in_time() {
        let budget = std::sync::Arc::new(Budget::new(1));
        let first = budget
            .admit(Instant::now() + Duration::from_secs(3))
            .await
            .unwrap();
        let waiter = {
            let budget = budget.clone();
            tokio::spawn(async move {
                budget
                    .admit(Instant::now() + Duration::from_secs(2))
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        budget.answered(first, Duration::from_millis(250), fine());
        assert_eq!(waiter.await.unwrap(), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_admits_nothing_until_it_has_passed() {
        let budget = Budget::new(4);
        let ticket = budget
            .admit(Instant::now() + Duration::from_secs(3))
            .await
            .unwrap();
        budget.answered(ticket, Duration::from_millis(250), retry_after(1));
        let started = Instant::now();
        let ticket = budget
            .admit(Instant::now() + Duration::from_secs(3))
            .await
            .unwrap();
        assert!(started.elapsed() >= Duration::from_secs(1));
        drop(ticket);
        // A Retry-After past the deadline: busy at once.
        let ticket = budget
            .admit(Instant::now() + Duration::from_secs(3))
            .await
            .unwrap();
        budget.answered(ticket, Duration::from_millis(250), retry_after(10));
        assert!(budget
            .admit(Instant::now() + Duration::from_secs(3))
            .await
            .is_err());
    }
}
