//! One conversation's pending permission requests: each shown to people with an unguessable
//! token, answered once (allow once, always, deny, or AskUserQuestion's answers), denied after
//! `claude.approval_timeout_secs`, or withdrawn by the CLI. Answering writes the decision to the
//! CLI; the actor then shows the outcome, records it in the audit, and stores "always" rules
//! (passed again to every new process, since the CLI's own die with it).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tracing::{info, instrument, warn};

use super::ChannelActor;
use crate::claude::permission::{Decision, PermissionRequest};
use crate::claude::SessionControl;
use crate::frontend::{
    AnswerApproval, ApprovalAnswer, ApprovalError, ApprovalState, Origin, ShowApproval,
};
use crate::metrics::{ApprovalOutcome, Metric, RecordMetric};
use crate::store::{AddRules, RecordApproval};

/// Claude asked for a permission during a turn (sent by the turn itself).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct PermissionAsked {
    /// What it asked.
    pub request: PermissionRequest,
    /// Where the answer goes.
    pub control: SessionControl,
    /// The message whose turn asked.
    pub origin: Origin,
}

/// The CLI withdrew a permission request.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct PermissionWithdrawn {
    /// Its id.
    pub request_id: String,
}

struct Pending {
    request: PermissionRequest,
    control: SessionControl,
    token: String,
    origin: Origin,
    asked_at: Instant,
    timer: SpawnHandle,
}

/// How a request ended, for the front end, the audit and the rules.
pub(super) struct Resolution {
    pub(super) request: PermissionRequest,
    pub(super) origin: Origin,
    pub(super) token: String,
    pub(super) state: ApprovalState,
    /// The audit's words: `allowed`, `allowed always`, `answered`, `denied`, `timed out`,
    /// `withdrawn`.
    pub(super) decision: &'static str,
    pub(super) by: Option<String>,
    /// Rules to store ("always").
    pub(super) rules: Vec<String>,
    pub(super) outcome: ApprovalOutcome,
    pub(super) waited: Duration,
    /// The request's timeout, to cancel.
    pub(super) timer: Option<SpawnHandle>,
}

/// The pending requests, by the CLI's request id.
#[derive(Default)]
pub(super) struct Approvals {
    pending: HashMap<String, Pending>,
}

/// 128 random bits, hex: a button's proof that it belongs to this request.
fn new_token() -> String {
    let mut bytes = [0_u8; 16];
    let mut filled = 0;
    while filled < bytes.len() {
        match rustix::rand::getrandom(&mut bytes[filled..], rustix::rand::GetRandomFlags::empty()) {
            Ok(n) => filled += n,
            Err(rustix::io::Errno::INTR) => {}
            // No kernel randomness at all: a token from the clock is still unique, if not
            // secret; refusing to ask would deny every tool.
            Err(_) => {
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                bytes.copy_from_slice(&t.to_le_bytes());
                break;
            }
        }
    }
    bytes.iter().fold(String::with_capacity(32), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

impl Approvals {
    /// Records `request` as asked; returns the token and what to show.
    pub(super) fn ask(
        &mut self,
        request: PermissionRequest,
        control: SessionControl,
        origin: Origin,
        timer: SpawnHandle,
    ) -> (String, ApprovalState) {
        let token = new_token();
        let state = ApprovalState::Asked {
            tool: request.tool_name.clone(),
            summary: request.summary(),
            questions: request.questions(),
            requested_by: origin.author_id,
            always: request.always_rules(),
        };
        self.pending.insert(
            request.request_id.clone(),
            Pending {
                request,
                control,
                token: token.clone(),
                origin,
                asked_at: Instant::now(),
                timer,
            },
        );
        (token, state)
    }

    /// How many are waiting for an answer.
    pub(super) fn len(&self) -> usize {
        self.pending.len()
    }

    /// A person's answer: written to the CLI, and what follows from it.
    pub(super) fn answer(
        &mut self,
        request_id: &str,
        token: &str,
        answer: ApprovalAnswer,
        by: &str,
    ) -> Result<Resolution, ApprovalError> {
        let p = self
            .pending
            .get(request_id)
            .ok_or(ApprovalError::NotPending)?;
        if p.token != token {
            return Err(ApprovalError::BadToken);
        }
        let p = self
            .pending
            .remove(request_id)
            .ok_or(ApprovalError::NotPending)?;
        let by = by.to_string();
        let (decision, state, words, rules, outcome) = match answer {
            ApprovalAnswer::AllowOnce => (
                Decision::Allow {
                    updated_input: None,
                    rules: Vec::new(),
                },
                ApprovalState::Allowed {
                    by: by.clone(),
                    always: false,
                },
                "allowed",
                Vec::new(),
                ApprovalOutcome::Allowed,
            ),
            ApprovalAnswer::AllowAlways => (
                Decision::Allow {
                    updated_input: None,
                    rules: p.request.rule_suggestions.clone(),
                },
                ApprovalState::Allowed {
                    by: by.clone(),
                    always: true,
                },
                "allowed always",
                p.request.always_rules(),
                ApprovalOutcome::Allowed,
            ),
            ApprovalAnswer::Deny(reason) => {
                let mut message = format!("Denied by {by}");
                if let Some(r) = reason.filter(|r| !r.trim().is_empty()) {
                    let _ = write!(message, ": {}", crate::text::truncate_chars(r.trim(), 300));
                }
                (
                    Decision::Deny { message },
                    ApprovalState::Denied { by: by.clone() },
                    "denied",
                    Vec::new(),
                    ApprovalOutcome::Denied,
                )
            }
            ApprovalAnswer::Answers(answers) => (
                Decision::Allow {
                    updated_input: Some(p.request.answered(&answers)),
                    rules: Vec::new(),
                },
                ApprovalState::Answered { by: by.clone() },
                "answered",
                Vec::new(),
                ApprovalOutcome::Allowed,
            ),
        };
        p.control.respond(request_id, &decision);
        Ok(resolution(p, state, words, Some(by), rules, outcome))
    }

    /// No answer in time: denied, and Claude is told so.
    pub(super) fn time_out(&mut self, request_id: &str, after: Duration) -> Option<Resolution> {
        let p = self.pending.remove(request_id)?;
        let message = format!(
            "No one answered within {} s, so this was denied.",
            after.as_secs()
        );
        p.control.respond(request_id, &Decision::Deny { message });
        let mut r = resolution(
            p,
            ApprovalState::TimedOut,
            "timed out",
            None,
            Vec::new(),
            ApprovalOutcome::TimedOut,
        );
        // The timer fired: nothing to cancel.
        r.timer = None;
        Some(r)
    }

    /// The CLI withdrew the request (or its turn ended).
    pub(super) fn withdraw(&mut self, request_id: &str) -> Option<Resolution> {
        let p = self.pending.remove(request_id)?;
        Some(resolution(
            p,
            ApprovalState::Withdrawn,
            "withdrawn",
            None,
            Vec::new(),
            ApprovalOutcome::Withdrawn,
        ))
    }

    /// Every request still pending (its turn is over).
    pub(super) fn withdraw_all(&mut self) -> Vec<Resolution> {
        let ids: Vec<String> = self.pending.keys().cloned().collect();
        ids.iter().filter_map(|id| self.withdraw(id)).collect()
    }
}

fn resolution(
    p: Pending,
    state: ApprovalState,
    decision: &'static str,
    by: Option<String>,
    rules: Vec<String>,
    outcome: ApprovalOutcome,
) -> Resolution {
    Resolution {
        waited: p.asked_at.elapsed(),
        timer: Some(p.timer),
        request: p.request,
        origin: p.origin,
        token: p.token,
        state,
        decision,
        by,
        rules,
        outcome,
    }
}

impl ChannelActor {
    /// Shows how a permission request ended, records it, stores its rules.
    pub(super) fn publish(&mut self, r: Resolution, ctx: &mut Context<Self>) {
        if let Some(timer) = r.timer {
            ctx.cancel_future(timer);
        }
        info!(
            channel_id = self.conversation.id.get(),
            tool = %r.request.tool_name,
            decision = r.decision,
            by = r.by.as_deref().unwrap_or("-"),
            "permission request resolved"
        );
        self.deps.approvals.do_send(ShowApproval {
            conversation_id: self.conversation.id,
            origin: r.origin,
            request_id: r.request.request_id.clone(),
            token: r.token.clone(),
            state: r.state.clone(),
        });
        self.deps.metrics.do_send(RecordMetric(Metric::Approval {
            outcome: r.outcome,
            waited: r.waited,
        }));
        let record = RecordApproval {
            conversation_id: self.conversation.id,
            conversation: self.conversation.name.clone(),
            tool: r.request.tool_name.clone(),
            summary: r.request.summary(),
            decision: r.decision.to_string(),
            decided_by: r.by.clone(),
            rule: (!r.rules.is_empty()).then(|| r.rules.join(", ")),
            at_ms: crate::time::unix_ms(),
        };
        let id = self.conversation.id;
        let store = self.deps.store.clone();
        let rules = r.rules;
        let save = async move {
            if !rules.is_empty() {
                if let Ok(Err(e)) = store.send(AddRules { id, rules }).await {
                    warn!(channel_id = id.get(), error = %e, "could not store the \"always\" rule");
                }
            }
            if let Ok(Err(e)) = store.send(record).await {
                warn!(channel_id = id.get(), error = %e, "could not record the permission decision");
            }
        };
        ctx.spawn(save.into_actor(self));
    }
}

impl Handler<PermissionAsked> for ChannelActor {
    type Result = ();

    #[instrument(skip_all, fields(channel_id = self.conversation.id.get(), tool = %msg.request.tool_name))]
    fn handle(&mut self, msg: PermissionAsked, ctx: &mut Self::Context) {
        let timeout = self.deps.runner.config().approval_timeout();
        let request_id = msg.request.request_id.clone();
        let timer = ctx.run_later(timeout, move |act, ctx| {
            if let Some(r) = act.approvals.time_out(&request_id, timeout) {
                act.publish(r, ctx);
            }
        });
        let request_id = msg.request.request_id.clone();
        let (token, state) = self
            .approvals
            .ask(msg.request, msg.control, msg.origin, timer);
        info!("Claude asks for a permission");
        self.deps.metrics.do_send(RecordMetric(Metric::Approval {
            outcome: ApprovalOutcome::Asked,
            waited: Duration::ZERO,
        }));
        self.deps.approvals.do_send(ShowApproval {
            conversation_id: self.conversation.id,
            origin: msg.origin,
            request_id,
            token,
            state,
        });
    }
}

impl Handler<PermissionWithdrawn> for ChannelActor {
    type Result = ();

    fn handle(&mut self, msg: PermissionWithdrawn, ctx: &mut Self::Context) {
        if let Some(r) = self.approvals.withdraw(&msg.request_id) {
            self.publish(r, ctx);
        }
    }
}

impl Handler<AnswerApproval> for ChannelActor {
    type Result = Result<(), ApprovalError>;

    #[instrument(skip_all, fields(channel_id = self.conversation.id.get()))]
    fn handle(&mut self, msg: AnswerApproval, ctx: &mut Self::Context) -> Self::Result {
        let r = self
            .approvals
            .answer(&msg.request_id, &msg.token, msg.answer, &msg.by)?;
        self.publish(r, ctx);
        Ok(())
    }
}
