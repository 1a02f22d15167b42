//! The request budget's unit tests, on tokio's paused clock.

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
    let budget = Budget::new(100, "ACte…st".into());
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
    let budget = Budget::new(10, "ACte…st".into());
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
    let budget = Budget::new(8, "ACte…st".into());
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
    let budget = Budget::new(1, "ACte…st".into());
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
    assert!(error.starts_with("busy: "), "{error}");
    assert_eq!(
        started.elapsed(),
        Duration::ZERO,
        "answered without waiting"
    );
    drop(first);
}

#[tokio::test(start_paused = true)]
async fn a_waiting_call_gets_the_slot_freed_in_time() {
    let budget = std::sync::Arc::new(Budget::new(1, "ACte…st".into()));
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
    let budget = Budget::new(4, "ACte…st".into());
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

#[tokio::test(start_paused = true)]
async fn a_retry_after_of_an_hour_pauses_no_longer_than_the_cap() {
    let budget = Budget::new(4, "ACte…st".into());
    budget.set_max_retry_after(Duration::from_secs(5));
    let ticket = budget
        .admit(Instant::now() + Duration::from_secs(3))
        .await
        .unwrap();
    budget.answered(ticket, Duration::from_millis(250), retry_after(3600));
    // Paused: busy at once, nothing waits.
    let started = Instant::now();
    let refused = budget.admit(Instant::now() + Duration::from_secs(3)).await;
    assert!(refused.is_err());
    assert_eq!(started.elapsed(), Duration::ZERO);
    tokio::time::advance(Duration::from_secs(5)).await;
    let admitted = budget.admit(Instant::now() + Duration::from_secs(3)).await;
    assert!(admitted.is_ok(), "still paused after the cap");
}

#[tokio::test(start_paused = true)]
async fn a_deadline_under_the_estimate_lets_one_probe_through_per_interval() {
    let budget = Budget::new(4, "ACte…st".into());
    // Learned: answers take 2 s. Then the deadline shrinks to 1 s (a reload).
    for _ in 0..200 {
        budget.learn(Duration::from_secs(2));
    }
    let ticket = budget
        .admit(Instant::now() + Duration::from_secs(5))
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(2)).await;
    budget.answered(ticket, Duration::from_secs(2), fine());
    let short = || Instant::now() + Duration::from_secs(1);
    assert!(budget.admit(short()).await.is_err(), "no room, just heard");
    tokio::time::advance(PROBE_INTERVAL - Duration::from_millis(10)).await;
    assert!(budget.admit(short()).await.is_err(), "too early to probe");
    tokio::time::advance(Duration::from_millis(10)).await;
    let probe = budget.admit(short()).await;
    assert!(probe.is_ok(), "a probe after the interval");
    assert!(budget.admit(short()).await.is_err(), "one probe, not two");
    // A fast answer teaches the estimate; each later probe teaches more.
    budget.answered(probe.unwrap(), Duration::from_millis(100), fine());
    assert!(budget.p90() < Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn no_probe_while_a_429_pauses() {
    let budget = Budget::new(4, "ACte…st".into());
    budget.set_max_retry_after(Duration::from_secs(60));
    let ticket = budget
        .admit(Instant::now() + Duration::from_secs(3))
        .await
        .unwrap();
    budget.answered(ticket, Duration::from_millis(250), retry_after(30));
    tokio::time::advance(PROBE_INTERVAL * 2).await;
    // 100 ms is under the first guess: only a probe could go, and the pause forbids it.
    let short = Instant::now() + Duration::from_millis(100);
    assert!(budget.admit(short).await.is_err());
}

#[tokio::test(start_paused = true)]
async fn a_poll_only_takes_room_sends_leave_spare() {
    let budget = Budget::new(4, "ACte…st".into());
    let later = || Instant::now() + Duration::from_secs(3);
    let send = budget.admit(later()).await.unwrap();
    let poll = budget.spare();
    assert!(poll.is_some(), "one send of four: room to spare");
    assert!(budget.spare().is_none(), "half the budget stays for sends");
    drop((send, poll));
    let sends = [
        budget.admit(later()).await.unwrap(),
        budget.admit(later()).await.unwrap(),
    ];
    assert!(
        budget.spare().is_none(),
        "two sends of four leave nothing to spare"
    );
    drop(sends);
    assert!(
        Budget::new(1, "ACte…st".into()).spare().is_none(),
        "one slot is never spare"
    );
    let paused = Budget::new(4, "ACte…st".into());
    let ticket = paused.admit(later()).await.unwrap();
    paused.answered(ticket, Duration::from_millis(250), retry_after(2));
    assert!(paused.spare().is_none(), "nothing while a 429 pauses");
}
