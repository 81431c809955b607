use std::fmt;
use std::str::FromStr;

/// Where an event is in its life. `docs/lifecycle.md` draws the machine; this
/// enum and [`State::can_become`] are its one definition in code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Stored, waiting for its turn (first attempt, or a retry scheduled).
    Pending,
    /// Claimed by a dispatcher under a lease; an attempt is in flight.
    Delivering,
    /// The destination answered 2xx. Terminal until a replay.
    Delivered,
    /// Every attempt failed. Terminal until a replay; never blocks its order key.
    Dead,
    /// A newer event with the same coalesce key replaced it before it started.
    Superseded,
}

impl State {
    pub const ALL: [State; 5] = [State::Pending, State::Delivering, State::Delivered, State::Dead, State::Superseded];

    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Delivering => "delivering",
            State::Delivered => "delivered",
            State::Dead => "dead",
            State::Superseded => "superseded",
        }
    }

    /// Still owed a delivery: such an event holds its place in its order key's queue.
    pub fn is_active(self) -> bool {
        matches!(self, State::Pending | State::Delivering)
    }

    /// The legal transitions. Stores enforce them in their statements
    /// (`UPDATE … WHERE state = …`), and the store conformance suite watches
    /// every event through every call and fails on any other move;
    /// `docs/lifecycle.md` draws exactly these (a test below reads the diagram
    /// and compares).
    pub fn can_become(self, next: State) -> bool {
        use State::*;
        matches!(
            (self, next),
            (Pending, Delivering)            // claimed
                | (Pending, Superseded)      // coalesced by a newer event
                | (Delivering, Delivered)    // 2xx
                | (Delivering, Pending)      // retry scheduled, or crash recovery
                | (Delivering, Delivering)   // lease expired and re-claimed
                | (Delivering, Dead)         // attempts exhausted
                | (Delivered, Pending)       // replay
                | (Dead, Pending)            // replay
                | (Superseded, Pending) // replay
        )
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown state {0:?} (expected pending, delivering, delivered, dead or superseded)")]
pub struct ParseStateError(String);

impl FromStr for State {
    type Err = ParseStateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        State::ALL.into_iter().find(|state| state.as_str() == s).ok_or_else(|| ParseStateError(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for state in State::ALL {
            assert_eq!(state.as_str().parse::<State>(), Ok(state));
            assert_eq!(serde_json::to_string(&state).unwrap(), format!("\"{state}\""), "JSON uses the same names");
        }
        assert!("done".parse::<State>().is_err());
    }

    /// The diagram in docs/lifecycle.md and `can_become` say the same thing.
    #[test]
    fn the_lifecycle_diagram_matches_can_become() {
        let doc = include_str!("../../../docs/lifecycle.md");
        let mut drawn = std::collections::HashSet::new();
        for line in doc.lines() {
            let Some((from, rest)) = line.trim().split_once(" --> ") else { continue };
            let to = rest.split(':').next().unwrap().trim();
            if from == "[*]" {
                continue;
            }
            drawn.insert((from.parse::<State>().unwrap(), to.parse::<State>().unwrap()));
        }
        for from in State::ALL {
            for to in State::ALL {
                assert_eq!(from.can_become(to), drawn.contains(&(from, to)), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn terminal_states_only_leave_by_replay() {
        for from in [State::Delivered, State::Dead, State::Superseded] {
            for to in State::ALL {
                assert_eq!(from.can_become(to), to == State::Pending, "{from} -> {to}");
            }
        }
        assert!(!State::Pending.can_become(State::Delivered));
    }
}
