//! Permission prompts on Discord, the gateway's side of the channel actor's `Approvals`: the
//! prompt posted for each request (its buttons and select menus from `discord::approvals`),
//! edited to the outcome when the core reports it, and the clicks on it — and on a progress
//! message's **Stop** — checked against who may answer (or stop) there before anything reaches
//! the core. A prompt Discord refuses to post is denied at once.

use std::collections::HashMap;

use actix::prelude::*;
use serenity::all::{
    ComponentInteraction, ComponentInteractionDataKind, CreateInteractionResponse,
};
use tracing::{info, instrument, warn};

use super::DiscordGateway;
use crate::discord::approvals::{
    answer_of, chosen, outcome, parse_custom_id, parse_now, parse_stop, prompt, Action,
};
use crate::discord::ids;
use crate::discord::outbound::{private, SendError};
use crate::frontend::{
    AnswerApproval, ApprovalAnswer, ApprovalState, CancelReason, CancelRun, RunNow, ShowApproval,
};
use crate::ids::{ChannelId, ConversationId, MessageId, UserId};

/// Handle a click on one of the bot's buttons (`INTERACTION_CREATE`, a component).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ReceiveClick(pub Box<ComponentInteraction>);

/// Remember where a permission prompt was posted.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct PromptPosted {
    token: String,
    /// Its message, or why Discord would not post it.
    message: Result<serenity::all::MessageId, SendError>,
}

/// A permission prompt on Discord.
struct Prompt {
    conversation_id: ConversationId,
    request_id: String,
    /// Where it was posted.
    channel_id: ChannelId,
    /// The message whose run asked.
    reply_to: MessageId,
    /// Its message, once posted.
    message: Option<serenity::all::MessageId>,
    /// Its text, to which the outcome is added.
    text: String,
    /// For `AskUserQuestion`: the questions offered and their options, and what was chosen so
    /// far (the answer goes once every question has one).
    questions: Vec<(String, Vec<String>)>,
    chosen: Vec<Option<String>>,
    /// The outcome, if it came before the post completed.
    closed: Option<String>,
}

/// The prompts shown, by the request's token.
#[derive(Default)]
pub(super) struct Prompts {
    shown: HashMap<String, Prompt>,
}

impl DiscordGateway {
    /// Edits the prompt of `token` to its outcome (as soon as it is posted, if it is not yet).
    fn close_prompt(&mut self, token: &str, state: &ApprovalState, ctx: &mut Context<Self>) {
        let Some(p) = self.prompts.shown.get_mut(token) else {
            return;
        };
        let text = format!("{}\n{}", p.text, outcome(state));
        match p.message {
            Some(message) => {
                let (out, channel) = (self.outbound.clone(), p.channel_id);
                self.prompts.shown.remove(token);
                self.send_later(
                    async move { out.close_prompt(channel, message, &text).await },
                    ctx,
                );
            }
            // Still being posted: closed as soon as it is.
            None => p.closed = Some(text),
        }
    }

    /// A permission prompt Discord would not post: the request is denied at once (Claude is
    /// told why) and the channel told.
    fn prompt_not_shown(
        &mut self,
        p: Prompt,
        token: String,
        why: &SendError,
        ctx: &mut Context<Self>,
    ) {
        warn!(channel_id = p.channel_id.get(), request_id = %p.request_id, %why, "a permission prompt could not be shown; denied");
        self.registry.do_send(AnswerApproval {
            conversation_id: p.conversation_id,
            request_id: p.request_id,
            token,
            answer: ApprovalAnswer::Deny(Some(format!(
                "The request could not be shown to anyone in the chat ({why}), so it was denied."
            ))),
            by: "the coordinator".into(),
        });
        let out = self.outbound.clone();
        let (channel, about) = (p.channel_id, p.reply_to);
        let text = format!(
            "⚠️ Claude asked for a permission, but the request could not be shown here ({why}), so it was denied and Claude was told."
        );
        let n = self.progress.next_note(about);
        self.send_in_order(
            channel,
            async move { out.send_note(channel, about, n, &text).await },
            ctx,
        );
    }
}

impl Handler<ShowApproval> for DiscordGateway {
    type Result = ();

    #[instrument(skip_all, fields(channel_id = msg.origin.channel_id.get(), message_id = msg.origin.message_id.get()))]
    fn handle(&mut self, msg: ShowApproval, ctx: &mut Self::Context) {
        if !matches!(msg.state, ApprovalState::Asked { .. }) {
            self.close_prompt(&msg.token, &msg.state, ctx);
            return;
        }
        let (text, components) = prompt(&msg.state, &msg.token);
        let questions: Vec<(String, Vec<String>)> = match &msg.state {
            ApprovalState::Asked { questions, .. } => questions
                .iter()
                .take(crate::discord::approvals::MAX_QUESTIONS)
                .map(|q| (q.question.clone(), q.options.clone()))
                .collect(),
            _ => Vec::new(),
        };
        self.prompts.shown.insert(
            msg.token.clone(),
            Prompt {
                conversation_id: msg.conversation_id,
                request_id: msg.request_id,
                channel_id: msg.origin.channel_id,
                reply_to: msg.origin.message_id,
                message: None,
                text: text.clone(),
                chosen: vec![None; questions.len()],
                questions,
                closed: None,
            },
        );
        let out = self.outbound.clone();
        let me = ctx.address();
        let (channel, reply_to, token) = (msg.origin.channel_id, msg.origin.message_id, msg.token);
        // It waits for someone: the asker, or the approvers if the asker may not answer.
        let mention = self
            .router
            .prompt_mentions(msg.conversation_id.into(), msg.origin.author_id);
        let named: Vec<String> = mention.iter().map(|u| format!("<@{u}>")).collect();
        let text = format!("{text}\n{}", named.join(" "));
        self.send_in_order(
            channel,
            async move {
                // The nonce comes from the request's token: a retried post is posted once.
                let nonce = token.chars().take(24).collect::<String>();
                let message = out
                    .post_with_buttons(
                        channel,
                        reply_to,
                        &text,
                        components,
                        format!("q{nonce}"),
                        &mention,
                    )
                    .await;
                me.do_send(PromptPosted { token, message });
            },
            ctx,
        );
    }
}

impl Handler<PromptPosted> for DiscordGateway {
    type Result = ();

    fn handle(&mut self, msg: PromptPosted, ctx: &mut Self::Context) {
        let Some(p) = self.prompts.shown.get_mut(&msg.token) else {
            return;
        };
        let posted = match msg.message {
            Ok(id) => id,
            Err(why) => {
                // Nobody can answer a prompt nobody sees: denied now, not at the timeout.
                if let Some(p) = self.prompts.shown.remove(&msg.token) {
                    self.prompt_not_shown(p, msg.token, &why, ctx);
                }
                return;
            }
        };
        p.message = Some(posted);
        if let Some(text) = p.closed.take() {
            let (out, channel) = (self.outbound.clone(), p.channel_id);
            self.prompts.shown.remove(&msg.token);
            self.send_later(
                async move { out.close_prompt(channel, posted, &text).await },
                ctx,
            );
        }
    }
}

impl Handler<ReceiveClick> for DiscordGateway {
    type Result = ();

    #[instrument(skip_all, fields(channel_id = msg.0.channel_id.get(), user_id = msg.0.user.id.get()))]
    fn handle(&mut self, msg: ReceiveClick, ctx: &mut Self::Context) {
        self.stats.event();
        let click = msg.0;
        let user = ids::user(click.user.id);
        let roles = ids::member_roles(click.member.as_ref());
        if let Some((conversation, message)) = parse_stop(&click.data.custom_id) {
            self.stop_clicked(click, conversation, message, (user, &roles), ctx);
        } else if let Some((conversation, message)) = parse_now(&click.data.custom_id) {
            self.now_clicked(click, conversation, message, (user, &roles), ctx);
        } else {
            self.prompt_clicked(click, (user, &roles), ctx);
        }
    }
}

impl DiscordGateway {
    /// **Stop** on a progress message: interrupts that message's run, for anyone allowed to
    /// talk in the conversation.
    fn stop_clicked(
        &mut self,
        click: Box<ComponentInteraction>,
        conversation: ConversationId,
        message: MessageId,
        (user, roles): (UserId, &[u64]),
        ctx: &mut Context<Self>,
    ) {
        let allowed = self
            .router
            .may(conversation.into(), user, roles)
            .is_some_and(|(talk, _)| talk);
        if !allowed {
            return self.refuse_click(click, "You are not allowed to stop Claude here.", ctx);
        }
        info!(
            channel_id = conversation.get(),
            message_id = message.get(),
            user_id = user.get(),
            "Stop pressed"
        );
        let stop = CancelRun {
            conversation_id: conversation,
            reason: CancelReason::User,
            message_id: Some(message),
        };
        self.acknowledge_and_ask(click, stop, "That run has already ended.", ctx);
    }

    /// Answers a button press privately with why nothing happens.
    fn refuse_click(
        &mut self,
        click: Box<ComponentInteraction>,
        text: &str,
        ctx: &mut Context<Self>,
    ) {
        let (out, response) = (self.outbound.clone(), private(text));
        self.send_later(
            async move { out.respond(&click.into(), response).await },
            ctx,
        );
    }

    /// *Interrupt and run this now* on a "queued" notice: for the waiting message's author or
    /// an approver.
    fn now_clicked(
        &mut self,
        click: Box<ComponentInteraction>,
        conversation: ConversationId,
        message: MessageId,
        (user, roles): (UserId, &[u64]),
        ctx: &mut Context<Self>,
    ) {
        let author = self.progress.queued.get(&message).map(|q| q.author);
        let approver = self
            .router
            .may(conversation.into(), user, roles)
            .is_some_and(|(_, approve)| approve);
        let refusal = match author {
            None => Some("That message is no longer waiting."),
            Some(a) if a != user && !approver => {
                Some("Only its author or an approver may run that message now.")
            }
            Some(_) => None,
        };
        if let Some(text) = refusal {
            return self.refuse_click(click, text, ctx);
        }
        info!(
            channel_id = conversation.get(),
            message_id = message.get(),
            user_id = user.get(),
            "Interrupt and run this now pressed"
        );
        let now = RunNow {
            conversation_id: conversation,
            message_id: message,
            by: user,
        };
        self.acknowledge_and_ask(click, now, "That message is no longer waiting.", ctx);
    }

    /// Acknowledges `click` at once (Discord wants an answer within 3 s), then asks the core;
    /// if it says no, the clicker is told `refused`, privately.
    fn acknowledge_and_ask<M>(
        &mut self,
        click: Box<ComponentInteraction>,
        ask: M,
        refused: &'static str,
        ctx: &mut Context<Self>,
    ) where
        M: Message<Result = bool> + Send + 'static,
        crate::registry::ChannelRegistry: Handler<M>,
    {
        let (out, registry) = (self.outbound.clone(), self.registry.clone());
        self.send_later(
            async move {
                let click = click.into();
                out.respond(&click, CreateInteractionResponse::Acknowledge)
                    .await;
                if !registry.send(ask).await.unwrap_or(false) {
                    out.whisper(&click, refused).await;
                }
            },
            ctx,
        );
    }

    /// A button or select menu of a permission prompt, for an approver.
    fn prompt_clicked(
        &mut self,
        click: Box<ComponentInteraction>,
        (user, roles): (UserId, &[u64]),
        ctx: &mut Context<Self>,
    ) {
        let out = self.outbound.clone();
        let found = parse_custom_id(&click.data.custom_id).and_then(|(action, token)| {
            self.prompts
                .shown
                .contains_key(token)
                .then(|| (action, token.to_string()))
        });
        let Some((action, token)) = found else {
            let response = private("This request is no longer waiting for an answer.");
            self.send_later(
                async move { out.respond(&click.into(), response).await },
                ctx,
            );
            return;
        };
        let conversation = self
            .prompts
            .shown
            .get(&token)
            .map_or(ConversationId::default(), |p| p.conversation_id);
        let allowed = self
            .router
            .may(conversation.into(), user, roles)
            .is_some_and(|(_, approve)| approve);
        if !allowed {
            info!(
                user_id = user.get(),
                "a click from someone who may not answer; nothing changes"
            );
            let response = private("You are not allowed to answer Claude's requests here.");
            self.send_later(
                async move { out.respond(&click.into(), response).await },
                ctx,
            );
            return;
        }
        let Some(p) = self.prompts.shown.get_mut(&token) else {
            return;
        };
        let answer = if let Action::Question(n) = action {
            let values = match &click.data.kind {
                ComponentInteractionDataKind::StringSelect { values } => values.clone(),
                _ => Vec::new(),
            };
            let picked = p
                .questions
                .get(n)
                .filter(|_| !values.is_empty())
                .and_then(|(_, options)| chosen(&values, options));
            let Some(picked) = picked else {
                let response = private("That option does not exist.");
                self.send_later(
                    async move { out.respond(&click.into(), response).await },
                    ctx,
                );
                return;
            };
            p.chosen[n] = Some(picked.join(", "));
            if p.chosen.iter().any(Option::is_none) {
                // More questions to answer: acknowledged, nothing sent yet.
                let ack = CreateInteractionResponse::Acknowledge;
                self.send_later(async move { out.respond(&click.into(), ack).await }, ctx);
                return;
            }
            ApprovalAnswer::Answers(
                p.questions
                    .iter()
                    .zip(&p.chosen)
                    .map(|((q, _), a)| (q.clone(), a.clone().unwrap_or_default()))
                    .collect(),
            )
        } else {
            match answer_of(&action) {
                Some(answer) => answer,
                None => return,
            }
        };
        let request_id = p.request_id.clone();
        let answer = AnswerApproval {
            conversation_id: conversation,
            request_id,
            token,
            answer,
            by: format!("<@{user}>"),
        };
        let registry = self.registry.clone();
        // Acknowledged at once (Discord wants an answer within 3 s); the prompt is edited to
        // the outcome when the channel reports it.
        self.send_later(
            async move {
                let click = click.into();
                out.respond(&click, CreateInteractionResponse::Acknowledge)
                    .await;
                let note = match registry.send(answer).await {
                    Ok(Ok(())) => return,
                    Ok(Err(e)) => format!("Not taken: {e}."),
                    Err(_) => "Not taken: the service is stopping.".to_string(),
                };
                out.whisper(&click, &note).await;
            },
            ctx,
        );
    }
}
