//! The command line: the real CLI's flags, parsed as it parses them (a usage error prints
//! only to stderr and exits 1).

pub(crate) const PERMISSION_MODES: [&str; 7] = [
    "acceptEdits",
    "auto",
    "bypassPermissions",
    "manual",
    "default",
    "dontAsk",
    "plan",
];
pub(crate) const DEFAULT_MODEL: &str = "claude-opus-5-5";
pub(crate) const KNOWN_MODELS: [&str; 3] =
    ["claude-opus-5-5", "claude-sonnet-5-5", "claude-haiku-5-5"];
pub(crate) const TOOLS: [&str; 8] = [
    "Task", "Bash", "Edit", "Glob", "Grep", "Read", "WebFetch", "Write",
];

/// What the command line asked for.
#[derive(Default, Debug)]
#[allow(clippy::struct_excessive_bools)] // one per CLI flag
pub(crate) struct Args {
    pub(crate) print: bool,
    pub(crate) version: bool,
    pub(crate) output_format: String,
    pub(crate) input_format: String,
    pub(crate) verbose: bool,
    pub(crate) resume: Option<String>,
    pub(crate) session_id: Option<String>,
    pub(crate) model: Option<String>,
    pub(crate) system_prompt: Option<String>,
    pub(crate) permission_mode: Option<String>,
    pub(crate) tools: Option<Vec<String>>,
    pub(crate) disallowed_tools: Vec<String>,
    pub(crate) disable_slash_commands: bool,
    pub(crate) permission_prompt_tool: Option<String>,
    pub(crate) allowed_tools: Vec<String>,
    pub(crate) settings: Option<String>,
    pub(crate) prompt: Option<String>,
    /// `--include-partial-messages`: `stream_event` lines with the text as it is written.
    pub(crate) partial: bool,
    /// `--fork-session` (with `--resume`): a new session id, the history copied.
    pub(crate) fork: bool,
}

/// A usage error: the real CLI prints one line on stderr, nothing on stdout, and exits 1.
pub(crate) struct Usage(pub(crate) String);

pub(crate) fn parse_args(argv: &[String]) -> Result<Args, Usage> {
    let mut parsed = Args {
        output_format: "text".into(),
        input_format: "text".into(),
        ..Args::default()
    };
    let mut i = 0;
    let value = |i: &mut usize, name: &str| -> Result<String, Usage> {
        *i += 1;
        argv.get(*i)
            .cloned()
            .ok_or_else(|| Usage(format!("error: option '{name}' argument missing")))
    };
    // Variadic options (`--tools a b`) take arguments up to the next option or `--`.
    let variadic = |i: &mut usize| -> Vec<String> {
        let mut out = Vec::new();
        while let Some(next) = argv.get(*i + 1) {
            if next.starts_with('-') {
                break;
            }
            *i += 1;
            out.extend(
                next.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty()),
            );
        }
        out
    };
    while i < argv.len() {
        let arg = argv[i].as_str();
        match arg {
            "--" => {
                parsed.prompt = argv.get(i + 1).cloned();
                break;
            }
            "-p" | "--print" => parsed.print = true,
            "-v" | "--version" => parsed.version = true,
            "--verbose" => parsed.verbose = true,
            "--include-partial-messages" => parsed.partial = true,
            "--fork-session" => parsed.fork = true,
            "--disable-slash-commands" => parsed.disable_slash_commands = true,
            "--output-format" => {
                let v = value(&mut i, "--output-format <format>")?;
                if !["text", "json", "stream-json"].contains(&v.as_str()) {
                    return Err(Usage(format!("error: option '--output-format <format>' argument '{v}' is invalid. Allowed choices are text, json, stream-json.")));
                }
                parsed.output_format = v;
            }
            "--input-format" => {
                let v = value(&mut i, "--input-format <format>")?;
                if !["text", "stream-json"].contains(&v.as_str()) {
                    return Err(Usage(format!("error: option '--input-format <format>' argument '{v}' is invalid. Allowed choices are text, stream-json.")));
                }
                parsed.input_format = v;
            }
            "-r" | "--resume" => parsed.resume = Some(value(&mut i, "--resume [value]")?),
            "--session-id" => parsed.session_id = Some(value(&mut i, "--session-id <uuid>")?),
            "--model" => parsed.model = Some(value(&mut i, "--model <model>")?),
            "--system-prompt" | "--append-system-prompt" => {
                parsed.system_prompt = Some(value(&mut i, "--system-prompt <prompt>")?);
            }
            "--max-turns" => {
                value(&mut i, "--max-turns <turns>")?;
            }
            "--permission-mode" => {
                let v = value(&mut i, "--permission-mode <mode>")?;
                if !PERMISSION_MODES.contains(&v.as_str()) {
                    return Err(Usage(format!("error: option '--permission-mode <mode>' argument '{v}' is invalid. Allowed choices are acceptEdits, auto, bypassPermissions, manual, dontAsk, plan.")));
                }
                parsed.permission_mode = Some(v);
            }
            "--dangerously-skip-permissions" => {
                parsed.permission_mode = Some("bypassPermissions".into());
            }
            "--tools" => parsed.tools = Some(variadic(&mut i)),
            "--allowedTools" | "--allowed-tools" => {
                parsed.allowed_tools.extend(variadic(&mut i));
            }
            "--permission-prompt-tool" => {
                parsed.permission_prompt_tool =
                    Some(value(&mut i, "--permission-prompt-tool <tool>")?);
            }
            "--settings" => parsed.settings = Some(value(&mut i, "--settings <file-or-json>")?),
            "--disallowedTools" | "--disallowed-tools" => {
                parsed.disallowed_tools.extend(variadic(&mut i));
            }
            other if other.starts_with('-') => {
                return Err(Usage(format!("error: unknown option '{other}'")));
            }
            other => {
                if parsed.prompt.is_none() {
                    parsed.prompt = Some(other.to_string());
                }
            }
        }
        i += 1;
    }
    Ok(parsed)
}
