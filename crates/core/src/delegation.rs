//! Delegation: which clients may act for which others (`API_DELEGATIONS`).
//!
//! Every client acts for itself. A delegate — typically the key-account service, which serves
//! many accounts with one token — may also act for the clients its entry names, or for every
//! client (`*`): start runs and executions in their name (`client_id` in the request) and read
//! them. What it starts belongs to the client it acted for, and records who acted
//! ([`Acting::acted_by`]).
//!
//! The setting is written like `API_TOKENS`: comma-separated entries
//! `delegate:client|client` or `delegate:*`, where `delegate` is a client id (the one its
//! token maps to), e.g. `key-accounts:*,agency:alice|bob`. Blank entries are ignored.

use std::collections::{BTreeMap, BTreeSet};

/// The clients one delegate may act for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every client (`*`).
    Everyone,
    /// The clients listed.
    Clients(BTreeSet<String>),
}

impl Scope {
    fn covers(&self, client: &str) -> bool {
        match self {
            Scope::Everyone => true,
            Scope::Clients(clients) => clients.contains(client),
        }
    }
}

/// Who may act for whom, parsed from `API_DELEGATIONS`. Empty: every client acts for itself only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Delegations(BTreeMap<String, Scope>);

/// Why an `API_DELEGATIONS` text was refused; each names the entry at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DelegationError {
    /// An entry without `:`.
    #[error("API_DELEGATIONS entry {entry:?} has no `:`; write `delegate:client|client` or `delegate:*`")]
    MissingColon {
        /// The entry as written.
        entry: String,
    },
    /// An entry whose delegate (before `:`) is blank.
    #[error("API_DELEGATIONS entry {entry:?} names no delegate before `:`")]
    NoDelegate {
        /// The entry as written.
        entry: String,
    },
    /// An entry with a blank client in its list (`a:` or `a:b||c`).
    #[error(
        "API_DELEGATIONS entry {entry:?} has an empty client in its list; list clients as `alice|bob`, or `*` for all"
    )]
    EmptyClient {
        /// The entry as written.
        entry: String,
    },
    /// `*` together with names.
    #[error("API_DELEGATIONS entry {entry:?} mixes `*` with client names; `*` stands alone")]
    MixedWildcard {
        /// The entry as written.
        entry: String,
    },
    /// Two entries for one delegate.
    #[error("API_DELEGATIONS names delegate {delegate:?} twice; give it one entry")]
    DuplicateDelegate {
        /// The delegate.
        delegate: String,
    },
}

impl Delegations {
    /// Parses the setting's text (see the module docs); every refusal names the entry.
    pub fn parse(text: &str) -> Result<Self, DelegationError> {
        let mut delegations = BTreeMap::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let owned = || entry.to_string();
            let (delegate, clients) =
                entry.split_once(':').ok_or_else(|| DelegationError::MissingColon { entry: owned() })?;
            let delegate = delegate.trim();
            if delegate.is_empty() {
                return Err(DelegationError::NoDelegate { entry: owned() });
            }
            let names: Vec<&str> = clients.split('|').map(str::trim).collect();
            if names.iter().any(|n| n.is_empty()) {
                return Err(DelegationError::EmptyClient { entry: owned() });
            }
            let scope = match names.as_slice() {
                ["*"] => Scope::Everyone,
                _ if names.contains(&"*") => return Err(DelegationError::MixedWildcard { entry: owned() }),
                _ => Scope::Clients(names.iter().map(|n| n.to_string()).collect()),
            };
            if delegations.insert(delegate.to_string(), scope).is_some() {
                return Err(DelegationError::DuplicateDelegate { delegate: delegate.to_string() });
            }
        }
        Ok(Delegations(delegations))
    }

    /// Whether `principal` (the client of the token) may act for `client`: itself always,
    /// another client only when delegated.
    pub fn may_act_for(&self, principal: &str, client: &str) -> bool {
        principal == client || self.0.get(principal).is_some_and(|scope| scope.covers(client))
    }

    /// Whom a request of `principal` acts for: the `client_id` it names, if it may act for
    /// it, else `None` (refused); itself when it names none.
    pub fn acting(&self, principal: &str, claimed: Option<&str>) -> Option<Acting> {
        match claimed {
            None => Some(Acting { client_id: principal.to_string(), acted_by: None }),
            Some(client) if client == principal => Some(Acting { client_id: principal.to_string(), acted_by: None }),
            Some(client) if self.may_act_for(principal, client) => {
                Some(Acting { client_id: client.to_string(), acted_by: Some(principal.to_string()) })
            }
            Some(_) => None,
        }
    }
}

/// The client a request acts for, and the delegate that acted, when it was not that client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acting {
    /// The client that owns what the request starts.
    pub client_id: String,
    /// The delegate whose token sent the request; `None` when the client acted itself.
    pub acted_by: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> Delegations {
        Delegations::parse(text).unwrap()
    }

    #[test]
    fn a_delegate_acts_for_its_clients_and_everyone_for_itself() {
        let d = parsed("key-accounts:*, agency: alice | bob ,");
        for (principal, client, expected) in [
            ("key-accounts", "alice", true),
            ("key-accounts", "anyone", true),
            ("agency", "alice", true),
            ("agency", "bob", true),
            ("agency", "carol", false),
            ("alice", "alice", true),
            ("alice", "bob", false),
            ("bob", "agency", false),
        ] {
            assert_eq!(d.may_act_for(principal, client), expected, "{principal} for {client}");
        }
        assert!(!Delegations::default().may_act_for("a", "b"));
        assert_eq!(parsed(""), Delegations::default());
    }

    #[test]
    fn acting_records_the_delegate_only_when_it_acts_for_another() {
        let d = parsed("kam:alice");
        let acting = |p, c| d.acting(p, c);
        assert_eq!(acting("kam", None), Some(Acting { client_id: "kam".into(), acted_by: None }));
        assert_eq!(acting("kam", Some("kam")), Some(Acting { client_id: "kam".into(), acted_by: None }));
        assert_eq!(
            acting("kam", Some("alice")),
            Some(Acting { client_id: "alice".into(), acted_by: Some("kam".into()) })
        );
        assert_eq!(acting("kam", Some("bob")), None);
        assert_eq!(acting("alice", Some("kam")), None);
    }

    #[test]
    fn malformed_entries_are_refused_naming_the_entry() {
        for (text, expected) in [
            ("kam", DelegationError::MissingColon { entry: "kam".into() }),
            (":alice", DelegationError::NoDelegate { entry: ":alice".into() }),
            ("kam:", DelegationError::EmptyClient { entry: "kam:".into() }),
            ("kam:a||b", DelegationError::EmptyClient { entry: "kam:a||b".into() }),
            ("kam:*|alice", DelegationError::MixedWildcard { entry: "kam:*|alice".into() }),
            ("kam:a,kam:b", DelegationError::DuplicateDelegate { delegate: "kam".into() }),
        ] {
            let error = Delegations::parse(text).unwrap_err();
            assert_eq!(error, expected, "{text}");
            assert!(error.to_string().contains("API_DELEGATIONS"), "{error}");
        }
    }
}
