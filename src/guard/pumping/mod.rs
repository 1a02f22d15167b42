//! The adaptive pumping guard: sends and confirmations counted per country and per number
//! range over a sliding window; a country or range that converts below `min_conversion` after
//! at least `min_sends` sends is throttled to a trickle for `block`, then watched again. In
//! `monitor` mode nothing is refused: what would be is logged and counted.
//!
//! In memory the ranges live in the two-generation bounded map (hashed with a per-process
//! key); with a shared store, the same counts are kept there by the rate-limit script
//! (`state/gcra.lua`) in the same round trip, and this state is the `local` fallback.

pub mod subject;
pub mod window;

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::guard::bounded::BoundedMap;
use crate::guard::geo::Region;
use crate::guard::ratelimit::Rate;
use crate::metrics::METRICS;
use subject::{range_of, Country};
use window::{bucket_of, converts_too_little, Window};

/// `pumping_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Off,
    /// Logs and counts what it would refuse; refuses nothing.
    Monitor,
    Enforce,
}

impl Mode {
    pub fn parse(text: &str) -> anyhow::Result<Mode> {
        match text.trim() {
            "off" => Ok(Mode::Off),
            "monitor" => Ok(Mode::Monitor),
            "enforce" => Ok(Mode::Enforce),
            other => {
                anyhow::bail!("pumping_mode must be enforce, monitor or off, not {other:?}")
            }
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Monitor => "monitor",
            Mode::Enforce => "enforce",
        }
    }
}

/// What is throttled: a whole country, or one number range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Country,
    Range,
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Scope::Country => "country",
            Scope::Range => "range",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    pub mode: Mode,
    /// Percent of sends that must be confirmed (0-100).
    pub min_conversion: u32,
    pub min_sends: u64,
    /// What still goes through while throttled; `None`: nothing.
    pub trickle: Option<Rate>,
    pub block: Duration,
    pub window: Duration,
    /// Countries (or calling codes) never watched.
    pub exempt: HashSet<Region>,
    /// Ranges remembered at most (two generations of half each).
    pub max_ranges: usize,
}

/// One country's or range's counts and its throttle.
#[derive(Debug, Clone, Copy, Default)]
struct Watched {
    window: Window,
    /// Milliseconds since the guard's epoch until which it is throttled (0: not).
    blocked_until: u64,
    /// The trickle's GCRA arrival time, in milliseconds since the epoch.
    trickle_tat: u64,
    /// A range's country (a country's own entry leaves it unknown).
    country: Option<Country>,
}

struct State {
    countries: HashMap<Country, Watched>,
    ranges: BoundedMap<Watched>,
}

pub struct Pumping {
    settings: Settings,
    epoch: Instant,
    hasher: RandomState,
    state: Mutex<State>,
}

/// What a number is counted under, kept with a sent message so that a confirmation by its
/// SID alone finds it: its country and its range's hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subject {
    country: Country,
    range: u64,
}

impl Subject {
    pub fn country(&self) -> Country {
        self.country
    }
}

/// A refusal by the guard: the scope that is throttled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled(pub Scope);

impl Pumping {
    pub fn new(settings: Settings) -> Pumping {
        let half = (settings.max_ranges / 2).max(1);
        Pumping {
            settings,
            epoch: Instant::now(),
            hasher: RandomState::new(),
            state: Mutex::new(State {
                countries: HashMap::new(),
                ranges: BoundedMap::new(half),
            }),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn is_off(&self) -> bool {
        self.settings.mode == Mode::Off
    }

    /// Whether `country` (of `phone`) is exempt: in `pumping_exempt` by code or by name.
    pub fn exempt(&self, country: Country, phone: &str) -> bool {
        let exempt = &self.settings.exempt;
        !exempt.is_empty()
            && (country
                .id()
                .is_some_and(|id| exempt.contains(&Region::Country(id)))
                || Country::calling_code(phone)
                    .is_some_and(|code| exempt.contains(&Region::CallingCode(code))))
    }

    /// Decides a send to `phone`; when the guard admits it, `then` runs (the rate limits) and,
    /// if it admits it too, the send is counted, and what it counts under is returned (`None`:
    /// the guard is off) for the send's record. A refusal counts nothing and runs nothing.
    /// (Locks: this guard's, then `then`'s; nothing takes them the other way round.)
    pub fn admit<E>(
        &self,
        phone: &str,
        then: impl FnOnce() -> Result<(), E>,
    ) -> Result<Result<Option<Subject>, Throttled>, E> {
        if self.is_off() {
            then()?;
            return Ok(Ok(None));
        }
        let now = self.now_ms();
        let bucket = bucket_of(Duration::from_millis(now), self.settings.window);
        let range_key = self.hasher.hash_one(range_of(phone));
        let Ok(mut state) = self.state.lock() else {
            then()?;
            return Ok(Ok(None)); // a poisoned lock must not stop OTPs
        };
        let state = &mut *state;
        let mut range = state.ranges.get(range_key).copied().unwrap_or_default();
        let country = *range.country.get_or_insert_with(|| Country::of(phone));
        let subject = Subject {
            country,
            range: range_key,
        };
        if self.exempt(country, phone) {
            then()?;
            METRICS.pumping.count_sent(country.as_str());
            return Ok(Ok(Some(subject)));
        }
        let whole = state.countries.entry(country).or_default();
        let mut refused = None;
        for (scope, watched) in [(Scope::Country, &mut *whole), (Scope::Range, &mut range)] {
            if !self.passes(watched, scope, bucket, now, country, phone) {
                refused = refused.or(Some(scope));
            }
        }
        if let Some(scope) = refused {
            if self.settings.mode == Mode::Enforce {
                // What the verdict changed (an episode's start) is kept; nothing counted.
                state.ranges.set(range_key, range);
                return Ok(Err(Throttled(scope)));
            }
            METRICS.pumping.count_monitored(scope.name());
        }
        if let Err(e) = then() {
            state.ranges.set(range_key, range);
            return Err(e);
        }
        whole.window.sent(bucket);
        range.window.sent(bucket);
        state.ranges.set(range_key, range);
        METRICS.pumping.count_sent(country.as_str());
        Ok(Ok(Some(subject)))
    }

    /// Whether a send may go as far as `watched` is concerned; starts an episode when its
    /// conversion is too low, and charges the trickle when it lets one through.
    fn passes(
        &self,
        watched: &mut Watched,
        scope: Scope,
        bucket: u64,
        now: u64,
        country: Country,
        phone: &str,
    ) -> bool {
        if watched.blocked_until <= now {
            let (sent, confirmed) = watched.window.totals(bucket);
            let s = &self.settings;
            if !converts_too_little(sent, confirmed, s.min_sends, s.min_conversion) {
                return true;
            }
            watched.blocked_until = now + s.block.as_millis() as u64;
            watched.trickle_tat = 0;
            episode_started(
                self.settings.mode,
                scope,
                country,
                phone,
                Some((sent, confirmed)),
                s,
            );
        }
        let Some(trickle) = self.settings.trickle else {
            return false;
        };
        let interval = (trickle.window / trickle.count).as_millis() as u64;
        let burst = trickle.window.as_millis() as u64;
        let tat = watched.trickle_tat.max(now) + interval;
        if tat - now > burst {
            return false;
        }
        watched.trickle_tat = tat;
        true
    }

    /// What `phone` is counted under (`None` when the guard is off): its country as the
    /// range's entry remembers it, so a number already sent to is not parsed again.
    pub fn subject(&self, phone: &str) -> Option<Subject> {
        if self.is_off() {
            return None;
        }
        let range = self.hasher.hash_one(range_of(phone));
        let known = self
            .state
            .lock()
            .ok()
            .and_then(|state| state.ranges.get(range).and_then(|w| w.country));
        let country = known.unwrap_or_else(|| Country::of(phone));
        Some(Subject { country, range })
    }

    /// A confirmation of a code sent to `phone`: counted for its country and range.
    pub fn confirmed(&self, phone: &str) {
        if let Some(subject) = self.subject(phone) {
            let exempt = self.exempt(subject.country, phone);
            self.tally(subject, exempt, true);
        }
    }

    /// A confirmation of the message kept as `subject`.
    pub fn confirmed_subject(&self, subject: Subject) {
        let exempt = subject
            .country
            .id()
            .is_some_and(|id| self.settings.exempt.contains(&Region::Country(id)));
        self.tally(subject, exempt, true);
    }

    /// A message to `phone` that will never arrive: one more unconfirmed send against its
    /// country and range.
    pub fn undelivered(&self, phone: &str) {
        if let Some(subject) = self.subject(phone) {
            let exempt = self.exempt(subject.country, phone);
            self.tally(subject, exempt, false);
        }
    }

    fn tally(&self, subject: Subject, exempt: bool, confirmed: bool) {
        let bucket = bucket_of(Duration::from_millis(self.now_ms()), self.settings.window);
        let Subject {
            country,
            range: range_key,
        } = subject;
        if confirmed {
            METRICS.pumping.count_confirmed(country.as_str());
        }
        if exempt {
            return;
        }
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        let mut range = state.ranges.get(range_key).copied().unwrap_or_default();
        range.country = Some(country);
        let whole = state.countries.entry(country).or_default();
        let count = |w: &mut Window| match confirmed {
            true => w.confirmed(bucket),
            false => w.sent(bucket),
        };
        count(&mut whole.window);
        count(&mut range.window);
        state.ranges.set(range_key, range);
    }

    /// Drops what left the window and is not throttled; returns how many ranges remain.
    pub fn sweep(&self) -> usize {
        let now = self.now_ms();
        let bucket = bucket_of(Duration::from_millis(now), self.settings.window);
        let Ok(mut state) = self.state.lock() else {
            return 0;
        };
        let keep = |w: &Watched| w.blocked_until > now || !w.window.is_stale(bucket);
        state.countries.retain(|_, w| keep(w));
        state.ranges.retain(keep)
    }

    fn now_ms(&self) -> u64 {
        // Never 0: a `blocked_until` of 0 means "never throttled".
        self.epoch.elapsed().as_millis() as u64 + 1
    }
}

/// A throttling episode begins (logged once per episode, here only; the lead connects this to
/// the alerts). `phone` is shown only as its masked range.
pub fn episode_started(
    mode: Mode,
    scope: Scope,
    country: Country,
    phone: &str,
    counts: Option<(u64, u64)>,
    settings: &Settings,
) {
    METRICS.pumping.episode(scope.name(), settings.block);
    let what = match scope {
        Scope::Country => format!("country {}", country.as_str()),
        Scope::Range => format!("range {} ({})", shown_range(phone), country.as_str()),
    };
    let then = match mode {
        Mode::Enforce => "throttled",
        _ => "would be throttled (pumping_mode = monitor)",
    };
    let counts = match counts {
        Some((sent, confirmed)) => format!("{confirmed} of {sent}"),
        None => format!(
            "under {} % of at least {}",
            settings.min_conversion, settings.min_sends
        ),
    };
    crate::alerts::raise(
        crate::alerts::Kind::PumpingThrottle,
        &format!("SMS pumping suspected: {what} confirmed {counts} codes; {then}"),
    );
    tracing::warn!(
        scope = scope.name(),
        "SMS pumping suspected: {what} confirmed {counts} codes in the window (under {} %); \
         {then} to {} for {} s; logged once per episode",
        settings.min_conversion,
        settings
            .trickle
            .map_or("nothing".to_owned(), |t| t.to_string()),
        settings.block.as_secs()
    );
}

/// A range for a log line: the calling code, a star per digit, `xxx` for the last three.
pub fn shown_range(phone: &str) -> String {
    let digits = phone.strip_prefix('+').unwrap_or(phone);
    let code = crate::mask::calling_code_len(digits).min(digits.len());
    let national = digits.len() - code;
    format!(
        "+{}{}xxx",
        &digits[..code],
        "*".repeat(national.saturating_sub(3))
    )
}

#[cfg(test)]
mod tests;
