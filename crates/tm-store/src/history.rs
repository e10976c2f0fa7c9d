//! A service's activation history, as its audit rows tell it, and the one rule of
//! rollback: go back to the state the service was in before its current one.
//!
//! Every change of which versions are active records the active versions after it. A
//! rollback records, on its own rows, the entry whose state it restored: the service is
//! then in that entry's state, and the next rollback goes back from there. Rolling back
//! twice goes back two states, as an undo does; a change made after a rollback starts
//! from the restored state.

/// One audit entry that changed which versions of a service are active.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StateEntry {
    pub(crate) id: i64,
    /// The versions active after it, in order.
    pub(crate) active: Vec<String>,
    /// For a rollback's row: the entry it restored.
    pub(crate) rollback_to: Option<i64>,
}

/// Where a rollback of a service with `history` (oldest first) would go.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Target<'h> {
    /// The entry whose state to restore.
    To(&'h StateEntry),
    /// There is no history at all.
    NoHistory,
    /// The service is in the first state it was ever in.
    AtFirst,
}

/// The state a rollback restores: the one before the state the service is in.
pub(crate) fn rollback_target(history: &[StateEntry]) -> Target<'_> {
    let Some(last) = history.last() else {
        return Target::NoHistory;
    };
    let current = state_of(history, last);
    match history.iter().rev().find(|entry| entry.id < current.id) {
        Some(before) => Target::To(state_of(history, before)),
        None => Target::AtFirst,
    }
}

/// The entry whose state `entry` left the service in: itself, or for a rollback's row
/// the entry it restored (which is always an earlier one).
fn state_of<'h>(history: &'h [StateEntry], mut entry: &'h StateEntry) -> &'h StateEntry {
    while let Some(to) = entry.rollback_to {
        match history.iter().find(|e| e.id == to && e.id < entry.id) {
            Some(restored) => entry = restored,
            // An entry no longer kept: this row's own state stands.
            None => break,
        }
    }
    entry
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(id: i64, active: &[&str]) -> StateEntry {
        StateEntry {
            id,
            active: active.iter().map(|v| v.to_string()).collect(),
            rollback_to: None,
        }
    }

    fn rollback(id: i64, to: &StateEntry) -> StateEntry {
        StateEntry {
            id,
            active: to.active.clone(),
            rollback_to: Some(to.id),
        }
    }

    fn target(history: &[StateEntry]) -> Option<Vec<String>> {
        match rollback_target(history) {
            Target::To(entry) => Some(entry.active.clone()),
            _ => None,
        }
    }

    #[test]
    fn nothing_to_go_back_to_without_an_earlier_state() {
        assert_eq!(rollback_target(&[]), Target::NoHistory);
        assert_eq!(rollback_target(&[change(1, &["v1"])]), Target::AtFirst);
    }

    #[test]
    fn a_rollback_goes_to_the_state_before_the_current_one() {
        let history = [change(1, &["v1"]), change(4, &["v1", "v2"])];
        assert_eq!(target(&history), Some(vec!["v1".to_string()]));
    }

    #[test]
    fn rolling_back_again_goes_further_back_like_an_undo() {
        // blue, then blue and green, then green alone.
        let mut history = vec![
            change(1, &["blue"]),
            change(2, &["blue", "green"]),
            change(3, &["green"]),
        ];
        let first = match rollback_target(&history) {
            Target::To(entry) => entry.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(first.active, ["blue", "green"]);
        history.push(rollback(5, &first));
        // Two rows of one rollback (two routes switched) say the same.
        history.push(rollback(6, &first));
        let second = match rollback_target(&history) {
            Target::To(entry) => entry.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(second.active, ["blue"]);
        history.push(rollback(7, &second));
        assert_eq!(rollback_target(&history), Target::AtFirst);
    }

    #[test]
    fn a_change_after_a_rollback_starts_from_the_restored_state() {
        let one = change(1, &["v1"]);
        let two = change(2, &["v1", "v2"]);
        let history = vec![
            one.clone(),
            two,
            rollback(3, &one),
            change(4, &["v1", "v3"]),
        ];
        // Back to the state the rollback restored, not to the one it undid.
        assert_eq!(target(&history), Some(vec!["v1".to_string()]));
    }

    #[test]
    fn a_rollback_naming_an_unknown_entry_stands_for_its_own_state() {
        let history = vec![
            change(1, &["v1"]),
            StateEntry {
                id: 9,
                active: vec!["v2".into()],
                rollback_to: Some(7),
            },
        ];
        assert_eq!(target(&history), Some(vec!["v1".to_string()]));
    }
}
