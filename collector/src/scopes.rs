//! Which shared baselines an agent certificate may read and contribute to (`baseline_scopes`).
//!
//! An agent fetches the merged baseline of a workload when it starts one without a mature
//! baseline of its own; only the agent knows what it runs, so the collector cannot check that
//! claim. What it can check is the operator's word: a scope says which agents (certificate
//! identities) may touch which workloads, e.g. `runner-acme-*=github:acme/*`, so a certificate
//! stolen from one team's runner cannot read what every other team's jobs do, nor contribute to
//! their baselines. Without any scope every agent may touch every workload (one fleet, one
//! trust domain). Patterns are globs (`*` matches any text, `/` included; `?` one character).

use std::str::FromStr;

use globset::{Glob, GlobMatcher, GlobSet, GlobSetBuilder};

/// One scope: the agents it names and the workloads they may touch.
#[derive(Debug, Clone)]
struct Scope {
    agents: GlobMatcher,
    workloads: GlobSet,
}

/// The configured scopes; empty: no restriction.
#[derive(Debug, Clone, Default)]
pub struct BaselineScopes {
    scopes: Vec<Scope>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ScopeError {
    #[error(
        "baseline scope {0:?} is not AGENTS=WORKLOAD[,WORKLOAD...] (e.g. runner-acme-*=github:acme/*)"
    )]
    Shape(String),
    #[error("baseline scope {scope:?}: pattern {pattern:?}: {why}")]
    Pattern {
        scope: String,
        pattern: String,
        why: String,
    },
}

impl FromStr for Scope {
    type Err = ScopeError;

    fn from_str(text: &str) -> Result<Self, ScopeError> {
        let shape = || ScopeError::Shape(text.to_owned());
        let (agents, workloads) = text.split_once('=').ok_or_else(shape)?;
        let glob = |pattern: &str| {
            Glob::new(pattern.trim()).map_err(|e| ScopeError::Pattern {
                scope: text.to_owned(),
                pattern: pattern.to_owned(),
                why: e.kind().to_string(),
            })
        };
        if agents.trim().is_empty() {
            return Err(shape());
        }
        let mut set = GlobSetBuilder::new();
        let mut any = false;
        for pattern in workloads.split(',').filter(|p| !p.trim().is_empty()) {
            set.add(glob(pattern)?);
            any = true;
        }
        if !any {
            return Err(shape());
        }
        Ok(Scope {
            agents: glob(agents)?.compile_matcher(),
            workloads: set.build().map_err(|e| ScopeError::Pattern {
                scope: text.to_owned(),
                pattern: workloads.to_owned(),
                why: e.kind().to_string(),
            })?,
        })
    }
}

impl BaselineScopes {
    /// Parses `AGENTS=WORKLOAD[,WORKLOAD...]` scopes, as configured.
    pub fn parse(texts: &[String]) -> Result<Self, ScopeError> {
        Ok(BaselineScopes {
            scopes: texts.iter().map(|t| t.parse()).collect::<Result<_, _>>()?,
        })
    }

    /// Whether any scope is configured (they need agent identities, hence TLS).
    pub fn restricted(&self) -> bool {
        !self.scopes.is_empty()
    }

    /// Whether `agent` (the certificate's identity, `None` without TLS) may read and contribute
    /// to `workload`'s shared baseline: always without scopes; with scopes, only when one of
    /// the scopes naming the agent names the workload (an agent no scope names may touch none).
    pub fn allows(&self, agent: Option<&str>, workload: &str) -> bool {
        if !self.restricted() {
            return true;
        }
        let Some(agent) = agent else {
            return false;
        };
        self.scopes
            .iter()
            .any(|s| s.agents.is_match(agent) && s.workloads.is_match(workload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(texts: &[&str]) -> BaselineScopes {
        BaselineScopes::parse(&texts.iter().map(|t| t.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn an_agent_touches_only_the_workloads_of_its_scopes() {
        let s = scopes(&[
            "runner-acme-*=github:acme/*",
            "runner-ops=systemd:backup.service, github:acme/infra/*",
        ]);
        assert!(s.allows(Some("runner-acme-1"), "github:acme/app/ci/build"));
        assert!(!s.allows(Some("runner-acme-1"), "github:globex/app/ci/build"));
        assert!(s.allows(Some("runner-ops"), "systemd:backup.service"));
        assert!(s.allows(Some("runner-ops"), "github:acme/infra/deploy/run"));
        assert!(!s.allows(Some("runner-ops"), "github:acme/app/ci/build"));
        assert!(
            !s.allows(Some("laptop"), "github:acme/app/ci/build"),
            "no scope names it"
        );
        assert!(!s.allows(None, "github:acme/app/ci/build"), "no identity");
    }

    #[test]
    fn without_scopes_every_agent_touches_every_workload() {
        let s = BaselineScopes::default();
        assert!(!s.restricted());
        assert!(s.allows(Some("anyone"), "github:acme/app/ci/build"));
        assert!(s.allows(None, "systemd:x.service"));
    }

    #[test]
    fn malformed_scopes_are_refused_with_the_expected_shape() {
        for bad in ["runner-*", "=github:*", "runner-*=", "runner-*= , "] {
            let err = BaselineScopes::parse(&[bad.to_owned()]).unwrap_err();
            assert_eq!(err, ScopeError::Shape(bad.to_owned()), "{bad}");
            assert!(err.to_string().contains("AGENTS=WORKLOAD"), "{err}");
        }
        let err = BaselineScopes::parse(&["runner-[=github:*".to_owned()]).unwrap_err();
        assert!(matches!(err, ScopeError::Pattern { .. }), "{err}");
    }
}
