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

/// An event's state, as one word, summarising its deliveries' (one per
/// matched route). For an event with one delivery it is that delivery's
/// state, as before routes existed. With several: `delivering` if any is,
/// else `pending` if any is (still owed a delivery), else `dead` if any died
/// (an operator has something to replay), else `delivered` if any was, else
/// `superseded`; `unrouted` when no route matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventState {
    Pending,
    Delivering,
    Delivered,
    Dead,
    Superseded,
    /// Stored, no route matched: nothing to deliver (the reasons are on the event; reroute it).
    Unrouted,
}

impl EventState {
    /// Delivery states by how much they say of an event, most first: an
    /// event's state is that of its deliveries' highest (still owed, then
    /// owed again soon, then failed for good, then delivered, then superseded).
    pub const RANKED: [State; 5] =
        [State::Delivering, State::Pending, State::Dead, State::Delivered, State::Superseded];

    pub const ALL: [EventState; 6] = [
        EventState::Pending,
        EventState::Delivering,
        EventState::Delivered,
        EventState::Dead,
        EventState::Superseded,
        EventState::Unrouted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventState::Unrouted => "unrouted",
            other => other.delivery_state().expect("a delivery state").as_str(),
        }
    }

    /// Still owed to its destination: pending or delivering.
    pub fn is_owed(self) -> bool {
        matches!(self, EventState::Pending | EventState::Delivering)
    }

    /// The delivery state of the same name (`unrouted` has none).
    pub fn delivery_state(self) -> Option<State> {
        match self {
            EventState::Pending => Some(State::Pending),
            EventState::Delivering => Some(State::Delivering),
            EventState::Delivered => Some(State::Delivered),
            EventState::Dead => Some(State::Dead),
            EventState::Superseded => Some(State::Superseded),
            EventState::Unrouted => None,
        }
    }

    /// The summary of an event's deliveries' states (see the type's doc).
    pub fn of(deliveries: impl IntoIterator<Item = State>) -> EventState {
        let mut top: Option<usize> = None;
        for state in deliveries {
            let rank = Self::RANKED.iter().position(|s| *s == state).expect("every state is ranked");
            top = Some(top.map_or(rank, |top| top.min(rank)));
        }
        match top {
            None => EventState::Unrouted,
            Some(rank) => Self::RANKED[rank].into(),
        }
    }

    /// Still owed a delivery.
    pub fn is_active(self) -> bool {
        matches!(self, EventState::Pending | EventState::Delivering)
    }
}

impl From<State> for EventState {
    fn from(state: State) -> Self {
        match state {
            State::Pending => EventState::Pending,
            State::Delivering => EventState::Delivering,
            State::Delivered => EventState::Delivered,
            State::Dead => EventState::Dead,
            State::Superseded => EventState::Superseded,
        }
    }
}

impl fmt::Display for EventState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown state {0:?} (expected pending, delivering, delivered, dead, superseded or unrouted)")]
pub struct ParseEventStateError(String);

impl FromStr for EventState {
    type Err = ParseEventStateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventState::ALL.into_iter().find(|state| state.as_str() == s).ok_or_else(|| ParseEventStateError(s.to_owned()))
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
    fn an_events_state_summarises_its_deliveries() {
        use State::*;
        assert_eq!(EventState::of([]), EventState::Unrouted);
        for state in State::ALL {
            assert_eq!(EventState::of([state]).delivery_state(), Some(state), "one delivery: its own state");
        }
        assert_eq!(EventState::of([Delivered, Pending, Dead]), EventState::Pending);
        assert_eq!(EventState::of([Pending, Delivering]), EventState::Delivering);
        assert_eq!(EventState::of([Delivered, Dead, Superseded]), EventState::Dead);
        assert_eq!(EventState::of([Delivered, Superseded]), EventState::Delivered);
        for state in EventState::ALL {
            assert_eq!(state.as_str().parse::<EventState>(), Ok(state));
            assert_eq!(serde_json::to_string(&state).unwrap(), format!("\"{state}\""));
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
