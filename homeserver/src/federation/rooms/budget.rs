//! What other servers' users may do in our rooms, per remote user and per remote server (all its
//! users together): chat forwarded to our rooms, devices announced or taken off, and signaling
//! and typing. Each of the three kinds has its own token buckets, so that a flood of one does not
//! starve the others, and a server's budget caps what many users of one server can do however
//! many there are.
//!
//! A request over budget is answered `M_LIMIT_EXCEEDED` with `retry_after_ms` (the whole request
//! for a server over budget; one forwarded message for a user over budget, in its result). EDUs
//! cannot be answered one by one, and are best-effort anyway: over budget they are dropped and
//! counted.

use std::time::Duration;

use crate::config::Settings;
use crate::limiter::KeyedLimiter;

/// The kinds of action budgeted separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// A chat message forwarded to one of our rooms.
    Chat,
    /// A device coming online or going offline in one of our rooms.
    Presence,
    /// A signaling or typing message, to or through one of our rooms.
    Ephemeral,
}

/// Buckets hold this many seconds' worth: a burst after a quiet spell.
const BURST_SECONDS: f64 = 2.0;
/// Presence gets this share of the event rates: devices come and go far less often than they
/// talk (a server confirms each of its devices once a minute by default).
const PRESENCE_SHARE: f64 = 0.1;

/// The budgets of other servers and of their users; see the module's documentation.
pub struct RemoteBudgets {
    /// By [`Action`], in its order: (per server, per user).
    buckets: [(KeyedLimiter, KeyedLimiter); 3],
}

impl Action {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Chat => "chat",
            Action::Presence => "presence",
            Action::Ephemeral => "ephemeral",
        }
    }
}

impl RemoteBudgets {
    /// Budgets from `federation.remote_server_events_per_second` and
    /// `federation.remote_user_events_per_second`.
    pub fn new(settings: &Settings) -> Self {
        let f = &settings.federation;
        let limiter =
            |per_second: f64| KeyedLimiter::with_rate(per_second, per_second * BURST_SECONDS);
        let pair = |share: f64| {
            (
                limiter(f64::from(f.remote_server_events_per_second) * share),
                limiter(f64::from(f.remote_user_events_per_second) * share),
            )
        };
        Self {
            buckets: [pair(1.0), pair(PRESENCE_SHARE), pair(1.0)],
        }
    }

    fn pair(&self, action: Action) -> &(KeyedLimiter, KeyedLimiter) {
        match action {
            Action::Chat => &self.buckets[0],
            Action::Presence => &self.buckets[1],
            Action::Ephemeral => &self.buckets[2],
        }
    }

    /// Spends `n` of `server`'s budget for `action` at once, or says how long until it has them.
    pub fn server(&self, action: Action, server: &str, n: usize) -> Result<(), Duration> {
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        self.pair(action).0.take_n(server, n)
    }

    /// Spends one of `user`'s budget for `action`, or says how long until it has one.
    pub fn user(&self, action: Action, user: &str) -> Result<(), Duration> {
        self.pair(action).1.take(user)
    }

    /// Spends one of both `server`'s and `user`'s budgets, or none.
    pub fn both(&self, action: Action, server: &str, user: &str) -> Result<(), Duration> {
        let (per_server, per_user) = self.pair(action);
        per_server.take(server)?;
        per_user
            .take(user)
            .inspect_err(|_| per_server.give_back(server))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budgets(server: u32, user: u32) -> RemoteBudgets {
        let settings = Settings::load_from(
            None,
            vec![
                (
                    "CONFAB__FEDERATION__REMOTE_SERVER_EVENTS_PER_SECOND".into(),
                    server.to_string(),
                ),
                (
                    "CONFAB__FEDERATION__REMOTE_USER_EVENTS_PER_SECOND".into(),
                    user.to_string(),
                ),
            ],
        )
        .unwrap();
        RemoteBudgets::new(&settings)
    }

    #[test]
    fn a_user_and_a_server_each_get_two_seconds_worth_and_kinds_are_apart() {
        let b = budgets(100, 10);
        for _ in 0..20 {
            b.both(Action::Chat, "s", "@u:s").unwrap();
        }
        // The user's 20 are spent: the 21st waits about a tenth of a second (10 a second).
        let wait = b.both(Action::Chat, "s", "@u:s").unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(100));
        // Another user of the same server still has budget, and signaling is counted apart.
        b.both(Action::Chat, "s", "@v:s").unwrap();
        b.both(Action::Ephemeral, "s", "@u:s").unwrap();
        // Presence gets a tenth: two per user.
        b.both(Action::Presence, "s", "@w:s").unwrap();
        b.both(Action::Presence, "s", "@w:s").unwrap();
        assert!(b.both(Action::Presence, "s", "@w:s").is_err());
    }

    #[test]
    fn a_batch_takes_all_of_its_messages_from_the_server_or_none() {
        let b = budgets(100, 1000);
        b.server(Action::Chat, "s", 150).unwrap();
        // 50 left: a batch of 60 is refused whole and takes nothing.
        assert!(b.server(Action::Chat, "s", 60).is_err());
        b.server(Action::Chat, "s", 50).unwrap();
        assert!(b.server(Action::Chat, "s", 1).is_err());
        assert!(b.server(Action::Chat, "t", 200).is_ok());
    }
}
