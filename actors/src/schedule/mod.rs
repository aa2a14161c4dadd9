//! Scheduled prompts (`/claude schedule`, `!schedule`): the [`Scheduler`] actor keeps every
//! schedule with its next time, and when a time comes it has the store write the run to the
//! inbox (in one transaction with the schedule's progress) and submits it to the registry like
//! any stored message — queued behind what waits there, answered once even across `kill -9`,
//! its answer headed "⏰ Scheduled prompt #N". A schedule whose previous run still waits skips
//! the time. At start, times missed while the service was down: the latest runs (late) if it
//! is within `schedules.catch_up_secs`, the rest are skipped and the conversation told once.
//!
//! The time comes from a [`Clock`], so tests set it instead of sleeping to the minute. The
//! actor is a thin shell: the expression and its times are `spec`, the rows the store's
//! `schedules` module.

pub mod spec;

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono_tz::Tz;
use tracing::{info, instrument, warn};

use crate::conversation::{ChannelProfile, ConversationRef};
use crate::frontend::{DeliverReply, Durability, Origin, ReplyKind, ScheduleAction, SubmitMessage};
use crate::ids::{ChannelId, ScheduleId, UserId};
use crate::metrics::{Metric, RecordMetric};
use crate::store::{
    AddSchedule, ChangeSchedule, FireSchedule, Fired, ListSchedules, Schedule, ScheduleChange,
    ScheduleTarget, SessionStoreActor, StoreError,
};
use crate::time::Clock;
pub use spec::{local_time, Spec};

/// `[schedules]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleConfig {
    /// The time zone cron expressions are read in.
    pub timezone: Tz,
    /// A time missed while the service was down still runs at start if it is at most this
    /// old.
    pub catch_up: Duration,
    /// No schedule runs more often than this.
    pub min_interval: Duration,
    /// Schedules per conversation.
    pub max_per_conversation: usize,
    /// The longest prompt.
    pub max_prompt_chars: usize,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            timezone: Tz::UTC,
            catch_up: Duration::from_secs(3600),
            min_interval: Duration::from_secs(300),
            max_per_conversation: 20,
            max_prompt_chars: 4000,
        }
    }
}

/// How often the scheduler looks at the clock.
const TICK: Duration = Duration::from_millis(500);

/// A time more than this old when it runs makes the run late.
const LATE_AFTER_MS: i64 = 60_000;

/// At most this many missed times are counted one by one.
const COUNT_CAP: u64 = 10_000;

/// Start the schedules: catch up on what was missed, then run each at its times. Sent once
/// the inbox has been restored (a run written before that would be queued twice).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct StartSchedules {
    /// Where runs go: the registry.
    pub submit: Recipient<SubmitMessage>,
    /// Where notices go: the front end.
    pub replies: Recipient<DeliverReply>,
}

/// A `schedule` command from a conversation; answers the text to reply with, and whether it
/// is an error. (The channel actor checked that changes come from an approver.)
#[derive(Debug, Message)]
#[rtype(result = "(String, bool)")]
pub struct ManageSchedules {
    /// The conversation.
    pub conversation: ConversationRef,
    /// Where it was asked (a schedule's answers go there).
    pub channel_id: ChannelId,
    /// Who asked.
    pub by: UserId,
    /// What to do.
    pub action: ScheduleAction,
}

struct Entry {
    schedule: Schedule,
    spec: Option<Spec>,
    /// A store call about it is under way.
    firing: bool,
}

/// Owns the schedules and their timing.
pub struct Scheduler {
    store: Addr<SessionStoreActor>,
    metrics: Recipient<RecordMetric>,
    clock: Clock,
    config: ScheduleConfig,
    profiles: HashMap<ChannelId, Arc<ChannelProfile>>,
    edges: Option<StartSchedules>,
    entries: BTreeMap<ScheduleId, Entry>,
}

impl Scheduler {
    /// A scheduler over the configured channels `profiles`.
    pub fn new(
        store: Addr<SessionStoreActor>,
        metrics: Recipient<RecordMetric>,
        clock: Clock,
        config: ScheduleConfig,
        profiles: &[Arc<ChannelProfile>],
    ) -> Self {
        Self {
            store,
            metrics,
            clock,
            config,
            profiles: profiles.iter().map(|p| (p.id, Arc::clone(p))).collect(),
            edges: None,
            entries: BTreeMap::new(),
        }
    }

    fn spec_of(&self, s: &Schedule) -> Option<Spec> {
        // Stored expressions were checked when added; the spacing check is not repeated.
        Spec::parse(
            &s.cron,
            Duration::ZERO,
            self.config.timezone,
            s.checked_to_ms,
        )
        .ok()
    }

    fn keep(&mut self, schedule: Schedule) {
        let spec = self.spec_of(&schedule);
        if spec.is_none() {
            warn!(schedule_id = schedule.id.get(), cron = %schedule.cron, "a stored schedule's expression no longer parses; it does not run");
        }
        let firing = self.entries.get(&schedule.id).is_some_and(|e| e.firing);
        self.entries.insert(
            schedule.id,
            Entry {
                schedule,
                spec,
                firing,
            },
        );
    }

    fn conversation_of(&self, s: &Schedule) -> Option<ConversationRef> {
        let profile = self.profiles.get(&s.profile_id)?;
        Some(ConversationRef {
            id: s.conversation_id,
            name: s.conversation.clone(),
            profile: Arc::clone(profile),
        })
    }

    /// Looks at every schedule: those with times due get a [`FireSchedule`].
    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.edges.is_none() {
            return;
        }
        let now = self.clock.now_ms();
        let tz = self.config.timezone;
        let catch_up = i64::try_from(self.config.catch_up.as_millis()).unwrap_or(i64::MAX);
        let mut due = Vec::new();
        let profiles = &self.profiles;
        for (id, e) in &mut self.entries {
            // A channel no longer configured: its schedules wait (a run written now would
            // have no conversation to go to).
            let runnable =
                !e.firing && !e.schedule.paused && profiles.contains_key(&e.schedule.profile_id);
            let Some(spec) = e.spec.as_ref().filter(|_| runnable) else {
                continue;
            };
            let (n, latest) = spec.due_between(e.schedule.checked_to_ms, now, tz, COUNT_CAP);
            let Some(latest) = latest else { continue };
            let run = now - latest <= catch_up;
            e.firing = true;
            due.push(FireSchedule {
                id: *id,
                run,
                missed: n - u64::from(run),
                checked_to_ms: now,
                late: now - latest > LATE_AFTER_MS,
            });
        }
        for fire in due {
            let (id, missed, ran) = (fire.id, fire.missed, fire.run);
            let asked = self.store.send(fire);
            ctx.spawn(asked.into_actor(self).map(move |res, act, _| {
                if let Some(e) = act.entries.get_mut(&id) {
                    e.firing = false;
                }
                match res.map_err(StoreError::from).and_then(|r| r) {
                    Ok(Some(fired)) => act.fired(fired, missed, ran),
                    // Removed or paused meanwhile: its entry says so already.
                    Ok(None) => {}
                    Err(e) => {
                        warn!(schedule_id = id.get(), error = %e, "could not run a schedule; trying again");
                    }
                }
            }));
        }
    }

    #[instrument(skip_all, fields(schedule_id = fired.schedule.id.get(), channel_id = fired.schedule.conversation_id.get()))]
    fn fired(&mut self, fired: Fired, missed: u64, ran: bool) {
        let schedule = fired.schedule.clone();
        self.keep(fired.schedule);
        self.metrics.do_send(RecordMetric(Metric::ScheduleFired {
            queued: fired.queued.is_some(),
            skipped: missed + u64::from(fired.still_waiting),
        }));
        let (Some(edges), Some(conversation)) = (&self.edges, self.conversation_of(&schedule))
        else {
            return;
        };
        let notice = |text: String| {
            let origin = Origin {
                channel_id: schedule.channel_id,
                message_id: fired.notice_id,
                author_id: UserId::NOBODY,
            };
            edges.replies.do_send(DeliverReply::new(
                &conversation,
                origin,
                ReplyKind::Notice,
                text,
                false,
            ));
        };
        if missed > 0 {
            let what = if ran && !fired.still_waiting {
                "the latest runs now"
            } else {
                "none of them runs now"
            };
            info!(
                missed,
                "a schedule's times were missed while the service was down"
            );
            notice(format!(
                "⏰ Schedule #{} (`{}`) missed {missed} time(s) while the service was down; {what}.",
                schedule.id,
                schedule.cron.replace('`', "'"),
            ));
        }
        if fired.still_waiting {
            info!("a schedule's time came while its previous run still waited; skipped");
            notice(format!(
                "⏰ Schedule #{} skipped a time: its previous run has not finished yet.",
                schedule.id
            ));
        }
        if let Some(m) = fired.queued {
            info!(
                message_id = m.message_id.get(),
                late = m.late,
                "a schedule's run is queued"
            );
            edges.submit.do_send(SubmitMessage {
                conversation,
                origin: Origin {
                    channel_id: m.channel_id,
                    message_id: m.message_id,
                    author_id: m.author_id,
                },
                text: m.text,
                attachments: Vec::new(),
                late: m.late,
                inbox: Durability::Stored,
                approver: false,
                via: m.via,
            });
        }
    }

    /// The answer to `schedule list` for `conversation`.
    fn list_text(&self, conversation: &ConversationRef) -> String {
        let tz = self.config.timezone;
        let mine: Vec<&Entry> = self
            .entries
            .values()
            .filter(|e| e.schedule.conversation_id == conversation.id)
            .collect();
        if mine.is_empty() {
            return "No schedules here. Approvers add one with `/claude schedule add when:<cron expression> prompt:<text>`.".into();
        }
        let mut text = format!("Schedules here (times in {tz}):");
        for e in mine {
            let s = &e.schedule;
            let next = if s.paused {
                "paused".to_string()
            } else {
                e.spec
                    .as_ref()
                    .and_then(|spec| spec.next_after(s.checked_to_ms.max(self.clock.now_ms()), tz))
                    .map_or_else(|| "never".into(), |t| format!("next {}", local_time(t, tz)))
            };
            let _ = write!(
                text,
                "\n• #{} `{}` — {next} · by <@{}> · ran {}, skipped {}\n  > {}",
                s.id,
                s.cron.replace('`', "'"),
                s.created_by,
                s.runs,
                s.skipped,
                crate::text::truncate_chars(s.prompt.lines().next().unwrap_or_default(), 100)
                    .replace('`', "'"),
            );
        }
        text
    }

    fn add(
        &mut self,
        msg: &ManageSchedules,
        cron: &str,
        prompt: &str,
    ) -> Result<ResponseActFuture<Self, (String, bool)>, String> {
        let now = self.clock.now_ms();
        let tz = self.config.timezone;
        let spec = Spec::parse(cron, self.config.min_interval, tz, now)?;
        let prompt = prompt.trim();
        if prompt.is_empty() {
            return Err("a schedule needs a prompt: what Claude is asked at each time".into());
        }
        let chars = prompt.chars().count();
        if chars > self.config.max_prompt_chars {
            return Err(format!(
                "the prompt is {chars} characters; a schedule's is at most {}",
                self.config.max_prompt_chars
            ));
        }
        let here = self
            .entries
            .values()
            .filter(|e| e.schedule.conversation_id == msg.conversation.id)
            .count();
        if here >= self.config.max_per_conversation {
            return Err(format!(
                "this conversation has {here} schedules, the most it may have (schedules.max_per_conversation); remove one first"
            ));
        }
        let add = self.store.send(AddSchedule {
            target: ScheduleTarget {
                conversation_id: msg.conversation.id,
                profile_id: msg.conversation.profile.id,
                conversation: msg.conversation.name.clone(),
                channel_id: msg.channel_id,
            },
            cron: spec.text().to_string(),
            prompt: prompt.to_string(),
            by: msg.by,
            now_ms: now,
        });
        let next = spec.next_after(now, tz);
        let cron = spec.text().to_string();
        let mut schedule = Schedule {
            id: ScheduleId(0),
            conversation_id: msg.conversation.id,
            profile_id: msg.conversation.profile.id,
            conversation: msg.conversation.name.clone(),
            channel_id: msg.channel_id,
            cron: cron.clone(),
            prompt: prompt.to_string(),
            created_by: msg.by,
            created_at_ms: now,
            paused: false,
            checked_to_ms: now,
            runs: 0,
            skipped: 0,
        };
        Ok(Box::pin(add.into_actor(self).map(move |res, act, _| {
            match res.map_err(StoreError::from).and_then(|r| r) {
                Ok(id) => {
                    info!(schedule_id = id.get(), channel_id = schedule.conversation_id.get(), cron = %cron, "schedule added");
                    schedule.id = id;
                    act.keep(schedule);
                    let next = next.map_or_else(|| "never".into(), |t| local_time(t, tz));
                    (
                        format!("⏰ Schedule #{id} added: `{}` — next run {next}.", cron.replace('`', "'")),
                        false,
                    )
                }
                Err(e) => (format!("The schedule could not be saved: {e}"), true),
            }
        })))
    }

    fn change(
        &mut self,
        msg: &ManageSchedules,
        id: ScheduleId,
        change: ScheduleChange,
    ) -> ResponseActFuture<Self, (String, bool)> {
        let asked = self.store.send(ChangeSchedule {
            id,
            conversation_id: msg.conversation.id,
            change,
            now_ms: self.clock.now_ms(),
        });
        Box::pin(asked.into_actor(self).map(move |res, act, _| {
            match res.map_err(StoreError::from).and_then(|r| r) {
                Ok(Some(s)) => {
                    info!(schedule_id = id.get(), change = ?change, "schedule changed");
                    let done = match change {
                        ScheduleChange::Remove => {
                            act.entries.remove(&id);
                            "removed"
                        }
                        ScheduleChange::Pause => {
                            act.keep(s);
                            "paused"
                        }
                        ScheduleChange::Resume => {
                            act.keep(s);
                            "resumed (times that fell due while it was paused do not run)"
                        }
                    };
                    (format!("⏰ Schedule #{id} {done}."), false)
                }
                Ok(None) => (
                    format!("There is no schedule #{id} in this conversation."),
                    true,
                ),
                Err(e) => (format!("The schedule could not be changed: {e}"), true),
            }
        }))
    }
}

impl Actor for Scheduler {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(TICK, Self::tick);
    }
}

impl Handler<StartSchedules> for Scheduler {
    type Result = ();

    fn handle(&mut self, msg: StartSchedules, ctx: &mut Self::Context) {
        let list = self.store.send(ListSchedules {
            conversation_id: None,
        });
        // Wait: no command is answered from a half-loaded list.
        ctx.wait(list.into_actor(self).map(move |res, act, ctx| {
            match res.map_err(StoreError::from).and_then(|r| r) {
                Ok(all) => {
                    info!(schedules = all.len(), "schedules loaded");
                    for s in all {
                        act.keep(s);
                    }
                }
                Err(e) => warn!(error = %e, "could not read the schedules; none runs until the next start"),
            }
            act.edges = Some(msg);
            // What was missed while the service was down, at once.
            act.tick(ctx);
        }));
    }
}

impl Handler<ManageSchedules> for Scheduler {
    type Result = ResponseActFuture<Self, (String, bool)>;

    #[instrument(skip_all, fields(channel_id = msg.conversation.id.get(), action = ?msg.action))]
    fn handle(&mut self, msg: ManageSchedules, _: &mut Self::Context) -> Self::Result {
        let answer = |text: String, is_error: bool| -> Self::Result {
            Box::pin(actix::fut::ready((text, is_error)))
        };
        match msg.action.clone() {
            ScheduleAction::List => answer(self.list_text(&msg.conversation), false),
            ScheduleAction::Add { cron, prompt } => match self.add(&msg, &cron, &prompt) {
                Ok(fut) => fut,
                Err(why) => answer(format!("No schedule added: {why}."), true),
            },
            ScheduleAction::Remove(id) => self.change(&msg, id, ScheduleChange::Remove),
            ScheduleAction::Pause(id) => self.change(&msg, id, ScheduleChange::Pause),
            ScheduleAction::Resume(id) => self.change(&msg, id, ScheduleChange::Resume),
        }
    }
}
