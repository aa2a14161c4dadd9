//! What a run cost: the CLI's `total_cost_usd`, read by version, turned into this run's cost and
//! the session's running total. Computed once per run, by the run, from what the conversation
//! had before it; the store writes the result.

/// The cost a CLI run reported in `total_cost_usd`, and how to read it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReportedCost {
    /// The value of `total_cost_usd`.
    pub total_usd: f64,
    /// True when the CLI reports the session's running total (2.1.330), false when it reports
    /// this call only (2.1.197).
    pub cumulative: bool,
}

impl ReportedCost {
    /// What this run cost and what the session has cost so far, given what was stored before.
    ///
    /// A different session id means a new session: its reported total is this run's cost.
    pub fn apply(
        self,
        previous_session: Option<&str>,
        previous_session_cost: f64,
        session: Option<&str>,
    ) -> CostUpdate {
        let same_session = previous_session.is_some() && previous_session == session;
        match (same_session, self.cumulative) {
            (true, true) => CostUpdate {
                run_usd: (self.total_usd - previous_session_cost).max(0.0),
                session_usd: self.total_usd,
            },
            (true, false) => CostUpdate {
                run_usd: self.total_usd,
                session_usd: previous_session_cost + self.total_usd,
            },
            (false, _) => CostUpdate {
                run_usd: self.total_usd,
                session_usd: self.total_usd,
            },
        }
    }
}

/// What one run cost, and what its session has cost so far.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CostUpdate {
    /// What this one run cost.
    pub run_usd: f64,
    /// What the session has cost so far.
    pub session_usd: f64,
}

impl CostUpdate {
    /// The costs after a run that reported `cost` (or nothing), given what was stored before.
    pub fn after(
        cost: Option<ReportedCost>,
        previous_session: Option<&str>,
        previous_session_cost: f64,
        session: Option<&str>,
    ) -> Self {
        match cost {
            Some(c) => c.apply(previous_session, previous_session_cost, session),
            None => Self {
                run_usd: 0.0,
                session_usd: if session == previous_session {
                    previous_session_cost
                } else {
                    0.0
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cumulative_cost_on_the_same_session_counts_only_the_increase() {
        let c = ReportedCost {
            total_usd: 0.15,
            cumulative: true,
        };
        let u = c.apply(Some("s1"), 0.10, Some("s1"));
        assert!((u.run_usd - 0.05).abs() < 1e-12);
        assert!((u.session_usd - 0.15).abs() < 1e-12);
    }

    #[test]
    fn per_call_cost_on_the_same_session_adds_up() {
        let c = ReportedCost {
            total_usd: 0.05,
            cumulative: false,
        };
        let u = c.apply(Some("s1"), 0.10, Some("s1"));
        assert!((u.run_usd - 0.05).abs() < 1e-12);
        assert!((u.session_usd - 0.15).abs() < 1e-12);
    }

    #[test]
    fn a_new_session_starts_its_cost_from_what_was_reported() {
        for cumulative in [true, false] {
            let c = ReportedCost {
                total_usd: 0.07,
                cumulative,
            };
            let u = c.apply(Some("old"), 0.50, Some("new"));
            assert!((u.run_usd - 0.07).abs() < 1e-12);
            assert!((u.session_usd - 0.07).abs() < 1e-12);
            let u = c.apply(None, 0.0, Some("new"));
            assert!((u.run_usd - 0.07).abs() < 1e-12);
        }
    }
}
