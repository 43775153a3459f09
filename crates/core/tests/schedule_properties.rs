//! Property tests of schedule slots: whatever the timing, the policy and how late or often
//! the ticks come, each slot fires at most once, never early, and the schedule always moves
//! past the tick that handled it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use baton_core::schedule::{due, timing, Due, Missed, Timing};
use baton_core::time::Millis;
use proptest::prelude::*;

const START: Millis = Millis::new(1_767_225_600_000); // 2026-01-01T00:00:00Z
const GRACE_MS: u64 = 6 * 60_000;

fn any_timing() -> impl Strategy<Value = Timing> {
    prop_oneof![
        (1i64..=7200).prop_map(|s| timing(None, None, Some(s)).unwrap()),
        prop::sample::select(vec![
            ("*/5 * * * *", "UTC"),
            ("0 9 * * 1-5", "Europe/Paris"),
            ("30 2 * * *", "Europe/Paris"),
            ("0 0 1 * *", "America/New_York"),
            ("15 */3 * * *", "Asia/Kolkata"),
        ])
        .prop_map(|(c, tz)| timing(Some(c), Some(tz), None).unwrap()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Ticks at random gaps (some at the same instant, some after long outages): the fired
    /// slots strictly increase, none is after its tick, and `next_slot` is always ahead of the
    /// tick that moved it.
    #[test]
    fn slots_fire_once_in_order_and_never_early(
        timing in any_timing(),
        latest in any::<bool>(),
        gaps in prop::collection::vec(prop_oneof![Just(0u64), 1u64..120_000, 1u64..40_000_000], 1..40),
    ) {
        let missed = if latest { Missed::Latest } else { Missed::Skip };
        let mut next = timing.next_after(START).expect("a first slot");
        let mut now = START;
        let mut fired: Vec<Millis> = Vec::new();
        for gap in gaps {
            now = now.saturating_add(gap);
            match due(&timing, next, now, missed, GRACE_MS) {
                Due::NotYet => prop_assert!(next > now),
                Due::Fire { slot, next_slot } => {
                    prop_assert!(slot >= next && slot <= now, "slot {slot} in [{next}, {now}]");
                    prop_assert!(fired.last().is_none_or(|last| slot > *last), "fired twice or backwards");
                    fired.push(slot);
                    next = next_slot.expect("these timings never end");
                    prop_assert!(next > now);
                }
                Due::Skip { latest, next_slot } => {
                    prop_assert_eq!(missed, Missed::Skip);
                    prop_assert!(now.since(latest) > GRACE_MS, "an on-time slot was skipped");
                    next = next_slot.expect("these timings never end");
                    prop_assert!(next > now);
                }
            }
        }
    }
}
