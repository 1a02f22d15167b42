//! When a message is polled: 2, 5, 10, 20, 40 s after it was sent, then doubling, and a last
//! time when the code's lifetime ends (after that its fate no longer matters to the user).

use std::time::Duration;

/// The first polls, in seconds after the send; then each doubles the last.
const FIRST: [u64; 3] = [2, 5, 10];

/// The poll times after a send, up to and including `lifetime`.
pub fn polls(lifetime: Duration) -> Vec<Duration> {
    let end = lifetime.as_secs().max(1);
    let mut at: Vec<u64> = FIRST.iter().copied().take_while(|s| *s < end).collect();
    // Doubling starts after the whole first list (a short lifetime ends inside it).
    let mut next = match at.len() == FIRST.len() {
        true => FIRST[FIRST.len() - 1] * 2,
        false => end,
    };
    while next < end {
        at.push(next);
        next *= 2;
    }
    at.push(end);
    at.into_iter().map(Duration::from_secs).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_ends_with_the_lifetime() {
        let secs = |l| {
            polls(Duration::from_secs(l))
                .iter()
                .map(|d| d.as_secs())
                .collect::<Vec<_>>()
        };
        assert_eq!(secs(300), [2, 5, 10, 20, 40, 80, 160, 300]);
        assert_eq!(secs(30), [2, 5, 10, 20, 30]);
        assert_eq!(secs(5), [2, 5]);
        assert_eq!(secs(1), [1]);
    }
}
