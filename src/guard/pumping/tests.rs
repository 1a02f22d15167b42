use super::*;

fn settings(mode: Mode) -> Settings {
    Settings {
        mode,
        min_conversion: 20,
        min_sends: 20,
        trickle: Some("1/10m".parse().unwrap()),
        block: Duration::from_secs(3600),
        window: Duration::from_secs(3600),
        exempt: HashSet::new(),
        max_ranges: 1000,
    }
}

fn send(guard: &Pumping, phone: &str) -> Result<(), Throttled> {
    let admitted = guard.admit::<()>(phone, || Ok(())).unwrap()?;
    // What the send is counted under is what `subject` says of the number.
    assert_eq!(admitted, guard.subject(phone));
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn a_range_that_never_converts_is_throttled_to_the_trickle() {
    let guard = Pumping::new(settings(Mode::Enforce));
    let mut admitted = 0;
    for n in 0..100 {
        if send(&guard, &format!("+23276123{n:03}")).is_ok() {
            admitted += 1;
        }
    }
    // 20 to learn from, one through the trickle.
    assert_eq!(admitted, 21);
    // Another range of the same country is throttled with the country.
    assert_eq!(send(&guard, "+23277000001"), Err(Throttled(Scope::Country)));
    // Other countries are not.
    assert!(send(&guard, "+31612345678").is_ok());
    tokio::time::advance(Duration::from_secs(600)).await;
    assert!(send(&guard, "+23276123999").is_ok(), "the trickle");
    assert!(send(&guard, "+23276123998").is_err());
}

#[tokio::test(start_paused = true)]
async fn converting_traffic_is_never_throttled_and_monitor_refuses_nothing() {
    let guard = Pumping::new(settings(Mode::Enforce));
    for n in 0..500u32 {
        let phone = format!("+3161234{n:04}");
        assert!(send(&guard, &phone).is_ok(), "send {n}");
        if n % 5 != 0 {
            guard.confirmed(&phone);
        }
    }
    let monitor = Pumping::new(settings(Mode::Monitor));
    for n in 0..100 {
        assert!(send(&monitor, &format!("+23276123{n:03}")).is_ok());
    }
}

#[tokio::test(start_paused = true)]
async fn undelivered_counts_against_the_range_and_exempt_countries_are_not_watched() {
    let guard = Pumping::new(settings(Mode::Enforce));
    for _ in 0..20 {
        guard.undelivered("+23276123456");
    }
    assert!(send(&guard, "+23276123000").is_ok(), "the trickle's first");
    assert!(send(&guard, "+23276123001").is_err());
    let mut exempt = settings(Mode::Enforce);
    exempt.exempt.insert("SL".parse().unwrap());
    let guard = Pumping::new(exempt);
    for n in 0..100 {
        assert!(send(&guard, &format!("+23276123{n:03}")).is_ok());
    }
}

#[tokio::test(start_paused = true)]
async fn a_throttle_ends_after_the_block_and_the_window_forgets() {
    let mut s = settings(Mode::Enforce);
    s.trickle = None;
    s.block = Duration::from_secs(600);
    let guard = Pumping::new(s);
    for n in 0..20 {
        assert!(send(&guard, &format!("+23276123{n:03}")).is_ok());
    }
    assert!(send(&guard, "+23276123100").is_err());
    // The block ends, but the window still holds the 20 unconfirmed sends: throttled again.
    tokio::time::advance(Duration::from_secs(601)).await;
    assert!(send(&guard, "+23276123101").is_err());
    // Once they left the window, the range is free again.
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert!(send(&guard, "+23276123102").is_ok());
    assert_eq!(shown_range("+23276123456"), "+232*****xxx");
}
