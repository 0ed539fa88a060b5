//! The agent's hands: Anthropic's `bash` and `str_replace_based_edit_tool`, carried out in
//! the task's sandbox. Whatever goes wrong inside a tool call is told to the model as an
//! error result; only a sandbox that stopped working ends the attempt.

use std::path::{Component, Path};
use std::time::Duration;

use berth_sandbox::{ExecRequest, Sandbox, SandboxError, Stream};
use serde_json::Value;

use crate::model::Tool;

pub const WORKSPACE: &str = "/workspace";
/// Bytes of each output stream a command shows the model (head and tail).
const MODEL_OUTPUT: usize = 30_000;
/// Largest file the editor reads.
const MAX_FILE: usize = 10 << 20;
/// Characters of a `view` the model gets at most.
const MAX_VIEW: usize = 100_000;
/// Where the bash tool remembers its working directory between commands.
const CWD_FILE: &str = "/tmp/.berth-cwd";

/// What a tool call tells the model.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolOutput {
    pub content: String,
    pub is_error: bool,
}

impl ToolOutput {
    fn ok(content: impl Into<String>) -> Self {
        Self {
            content: content.into(),
            is_error: false,
        }
    }

    fn error(content: impl Into<String>) -> Self {
        Self {
            content: content.into(),
            is_error: true,
        }
    }
}

pub struct Toolbox<'a> {
    pub sandbox: &'a dyn Sandbox,
    /// Longest one bash command may run.
    pub command_timeout: Duration,
}

type OnOutput<'o> = dyn for<'b> FnMut(Stream, &'b [u8]) + Send + 'o;

impl Toolbox<'_> {
    /// Runs one tool call. `Err` only when the sandbox itself failed.
    pub async fn run(
        &self,
        name: &str,
        input: &Value,
        on_output: &mut OnOutput<'_>,
    ) -> Result<ToolOutput, SandboxError> {
        if input.get("_invalid_json").is_some() || !input.is_object() {
            return Ok(ToolOutput::error(
                "The tool input was not a valid JSON object; send the call again.",
            ));
        }
        match Tool::from_name(name) {
            Some(Tool::Bash) => self.bash(input, on_output).await,
            Some(Tool::Editor) => self.edit(input).await,
            None => Ok(ToolOutput::error(format!(
                "There is no tool named {name:?}; use bash or str_replace_based_edit_tool."
            ))),
        }
    }

    async fn bash(
        &self,
        input: &Value,
        on_output: &mut OnOutput<'_>,
    ) -> Result<ToolOutput, SandboxError> {
        if input["restart"].as_bool() == Some(true) {
            self.sandbox
                .exec(
                    &ExecRequest::new(format!("rm -f {CWD_FILE}")),
                    &mut |_, _| {},
                )
                .await?;
            return Ok(ToolOutput::ok(
                "The shell was restarted; the next command starts in /workspace.",
            ));
        }
        let Some(command) = input["command"].as_str().filter(|c| !c.trim().is_empty()) else {
            return Ok(ToolOutput::error("bash needs a `command`."));
        };
        // Each command gets a fresh shell; only the working directory carries over.
        let script = format!(
            "cd \"$(cat {CWD_FILE} 2>/dev/null || echo {WORKSPACE})\" 2>/dev/null || cd {WORKSPACE}\n\
             trap 'pwd > {CWD_FILE}' EXIT\n{command}\n"
        );
        let request = ExecRequest {
            timeout: self.command_timeout,
            max_output: MODEL_OUTPUT,
            ..ExecRequest::new(script)
        };
        let done = self.sandbox.exec(&request, on_output).await?;
        let mut content = String::from_utf8_lossy(&done.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&done.stderr);
        if !stderr.is_empty() {
            if !content.is_empty() && !content.ends_with('\n') {
                content.push('\n');
            }
            content.push_str(&stderr);
        }
        if done.timed_out {
            content.push_str(&format!(
                "\n[killed: the command ran longer than {} s]",
                self.command_timeout.as_secs()
            ));
            return Ok(ToolOutput::error(content));
        }
        if done.oom_killed {
            content.push_str("\n[killed: the sandbox ran out of memory]");
            return Ok(ToolOutput::error(content));
        }
        match done.exit_code {
            Some(0) if content.is_empty() => content.push_str("(no output)"),
            Some(0) => {}
            code => content.push_str(&format!("\n[exit code {}]", code.unwrap_or(-1))),
        }
        Ok(ToolOutput::ok(content))
    }

    async fn edit(&self, input: &Value) -> Result<ToolOutput, SandboxError> {
        let Some(path) = input["path"].as_str() else {
            return Ok(ToolOutput::error("The editor needs a `path`."));
        };
        let path = match workspace_path(path) {
            Ok(path) => path,
            Err(message) => return Ok(ToolOutput::error(message)),
        };
        let text = |field: &str| input[field].as_str();
        let result = match input["command"].as_str() {
            Some("view") => self.view(&path, &input["view_range"]).await?,
            Some("create") => match text("file_text") {
                Some(contents) => self
                    .write(&path, contents)
                    .await?
                    .map(|()| format!("File created: {path}")),
                None => Err("create needs `file_text`.".to_string()),
            },
            Some("str_replace") => match text("old_str") {
                Some(old) => {
                    self.replace(&path, old, text("new_str").unwrap_or(""))
                        .await?
                }
                None => Err("str_replace needs `old_str`.".to_string()),
            },
            Some("insert") => {
                let line = input["insert_line"].as_u64();
                let new = text("insert_text").or_else(|| text("new_str"));
                match (line, new) {
                    (Some(line), Some(new)) => self.insert(&path, line as usize, new).await?,
                    _ => Err("insert needs `insert_line` and `insert_text`.".to_string()),
                }
            }
            other => Err(format!(
                "Unknown editor command {other:?}; use view, create, str_replace or insert."
            )),
        };
        Ok(match result {
            Ok(content) => ToolOutput::ok(content),
            Err(message) => ToolOutput::error(message),
        })
    }

    async fn view(
        &self,
        path: &str,
        range: &Value,
    ) -> Result<Result<String, String>, SandboxError> {
        let contents = match self.read(path).await? {
            Read::File(contents) => contents,
            Read::Directory(listing) => {
                return Ok(Ok(format!(
                    "Files and directories up to 2 levels deep in {path}, hidden ones left out:\n{listing}"
                )))
            }
            Read::Problem(message) => return Ok(Err(message)),
        };
        let lines: Vec<&str> = contents.lines().collect();
        let (start, end) = match range.as_array().map(Vec::as_slice) {
            None => (1, lines.len()),
            Some([start, end]) => {
                let start = start.as_i64().unwrap_or(0);
                let end = end.as_i64().unwrap_or(0);
                let end = if end == -1 { lines.len() as i64 } else { end };
                if start < 1
                    || start > lines.len().max(1) as i64
                    || end < start
                    || end > lines.len() as i64
                {
                    return Ok(Err(format!(
                        "Invalid view_range [{start}, {end}]: the file has {} lines; use [first, last] counting from 1, or -1 for the end.",
                        lines.len()
                    )));
                }
                (start as usize, end as usize)
            }
            Some(_) => return Ok(Err("view_range must be [first, last].".into())),
        };
        let mut shown = String::new();
        for (number, line) in lines.iter().enumerate().take(end).skip(start - 1) {
            if shown.len() > MAX_VIEW {
                shown.push_str(&format!(
                    "[... cut at line {number}; view a smaller view_range to see more]\n"
                ));
                break;
            }
            shown.push_str(&format!("{:>6}\t{line}\n", number + 1));
        }
        Ok(Ok(shown))
    }

    async fn replace(
        &self,
        path: &str,
        old: &str,
        new: &str,
    ) -> Result<Result<String, String>, SandboxError> {
        let contents = match self.read(path).await? {
            Read::File(contents) => contents,
            Read::Directory(_) => return Ok(Err(format!("{path} is a directory."))),
            Read::Problem(message) => return Ok(Err(message)),
        };
        if old.is_empty() {
            return Ok(Err(
                "old_str is empty; it must match text in the file exactly once.".into(),
            ));
        }
        let found: Vec<usize> = contents.match_indices(old).map(|(at, _)| at).collect();
        let line_of = |at: usize| contents[..at].matches('\n').count() + 1;
        match found.as_slice() {
            [] => Ok(Err(format!(
                "No replacement was made: old_str does not appear verbatim in {path}."
            ))),
            [at] => {
                let line = line_of(*at);
                let updated = contents.replacen(old, new, 1);
                Ok(self
                    .write(path, &updated)
                    .await?
                    .map(|()| format!("Edited {path}: replaced the text at line {line}.")))
            }
            many => {
                let lines: Vec<String> = many.iter().map(|at| line_of(*at).to_string()).collect();
                Ok(Err(format!(
                    "No replacement was made: old_str appears {} times in {path} (lines {}); include more lines around it so it matches once.",
                    many.len(),
                    lines.join(", ")
                )))
            }
        }
    }

    async fn insert(
        &self,
        path: &str,
        after: usize,
        text: &str,
    ) -> Result<Result<String, String>, SandboxError> {
        let contents = match self.read(path).await? {
            Read::File(contents) => contents,
            Read::Directory(_) => return Ok(Err(format!("{path} is a directory."))),
            Read::Problem(message) => return Ok(Err(message)),
        };
        let lines: Vec<&str> = contents.split_inclusive('\n').collect();
        if after > lines.len() {
            return Ok(Err(format!(
                "insert_line {after} is past the end: {path} has {} lines.",
                lines.len()
            )));
        }
        let mut updated = lines[..after].concat();
        // A last line without a newline gets one before text is added after it.
        if !updated.is_empty() && !updated.ends_with('\n') {
            updated.push('\n');
        }
        updated.push_str(text);
        if !text.ends_with('\n') {
            updated.push('\n');
        }
        updated.push_str(&lines[after..].concat());
        Ok(self.write(path, &updated).await?.map(|()| {
            format!(
                "Inserted {} line(s) after line {after} of {path}.",
                text.lines().count().max(1)
            )
        }))
    }

    /// Reads a file (or lists a directory) as the sandbox user, refusing anything that
    /// resolves outside the workspace, symbolic links included.
    async fn read(&self, path: &str) -> Result<Read, SandboxError> {
        let script = format!(
            "{RESOLVE_IN_WORKSPACE}\nif [ -d \"$f\" ]; then cd \"$f\" && find . -mindepth 1 -maxdepth 2 -not -path '*/.*' -not -path '*/node_modules/*' | sort | head -n 2000; exit 10; fi\n\
             if [ ! -e \"$f\" ]; then echo \"$1 does not exist\" >&2; exit 4; fi\ncat -- \"$f\"",
        );
        let request = ExecRequest {
            args: vec![path.to_string()],
            timeout: Duration::from_secs(60),
            max_output: MAX_FILE,
            ..ExecRequest::new(script)
        };
        let done = self.sandbox.exec(&request, &mut |_, _| {}).await?;
        let stderr = String::from_utf8_lossy(&done.stderr).trim().to_string();
        Ok(match done.exit_code {
            Some(0) if done.truncated => Read::Problem(format!(
                "{path} is larger than {} MiB; look at it with bash (head, sed -n, grep).",
                MAX_FILE >> 20
            )),
            Some(0) if done.stdout.contains(&0) => Read::Problem(format!(
                "{path} is a binary file; the editor works on text."
            )),
            Some(0) => match String::from_utf8(done.stdout) {
                Ok(text) => Read::File(text),
                Err(_) => Read::Problem(format!("{path} is not UTF-8 text.")),
            },
            Some(10) => Read::Directory(String::from_utf8_lossy(&done.stdout).into_owned()),
            _ if stderr.is_empty() => Read::Problem(format!("{path} cannot be read.")),
            _ => Read::Problem(stderr),
        })
    }

    /// Writes a file as the sandbox user: the text is put in a fresh file under /tmp, then
    /// copied over the target by a command that checks where the target really is.
    async fn write(&self, path: &str, contents: &str) -> Result<Result<(), String>, SandboxError> {
        let staging = format!("/tmp/.berth-edit-{:016x}", rand::random::<u64>());
        self.sandbox.put_file(&staging, contents.as_bytes()).await?;
        let script = format!(
            "{RESOLVE_IN_WORKSPACE}\nif [ -d \"$f\" ]; then echo \"$1 is a directory\" >&2; rm -f -- \"$2\"; exit 4; fi\n\
             mkdir -p -- \"$(dirname -- \"$f\")\" && cat -- \"$2\" > \"$f\"; s=$?; rm -f -- \"$2\"; exit $s",
        );
        let request = ExecRequest {
            args: vec![path.to_string(), staging],
            ..ExecRequest::new(script)
        };
        let done = self.sandbox.exec(&request, &mut |_, _| {}).await?;
        if done.exit_code == Some(0) {
            return Ok(Ok(()));
        }
        let stderr = String::from_utf8_lossy(&done.stderr).trim().to_string();
        Ok(Err(if stderr.is_empty() {
            format!("{path} could not be written.")
        } else {
            stderr
        }))
    }
}

enum Read {
    File(String),
    Directory(String),
    /// Not readable, in words for the model.
    Problem(String),
}

/// Shell lines that set `$f` to the real path of the script's first argument (links
/// followed) and stop unless it is inside the workspace. The path is only ever an argument:
/// text the model wrote never becomes part of a script.
const RESOLVE_IN_WORKSPACE: &str = concat!(
    "f=$(realpath -m -- \"$1\") || exit 3\n",
    "case \"$f\" in /workspace|/workspace/*) ;; *) echo \"$1 resolves to $f, outside /workspace; ",
    "the editor works only inside /workspace\" >&2; exit 3;; esac"
);

/// Checks a path the model gave: absolute, inside the workspace, no `..`.
fn workspace_path(path: &str) -> Result<String, String> {
    let given = Path::new(path);
    if !given.is_absolute() {
        return Err(format!(
            "{path} is not an absolute path; paths start with {WORKSPACE}/."
        ));
    }
    let normal = given
        .components()
        .all(|part| matches!(part, Component::RootDir | Component::Normal(_)));
    if !normal || !given.starts_with(WORKSPACE) || path.contains('\0') {
        return Err(format!(
            "{path} is outside {WORKSPACE}; the editor works only inside {WORKSPACE}."
        ));
    }
    Ok(path.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_paths_inside_the_workspace_are_accepted() {
        assert_eq!(
            workspace_path("/workspace/src/a.rs").unwrap(),
            "/workspace/src/a.rs"
        );
        assert_eq!(workspace_path("/workspace").unwrap(), "/workspace");
        for bad in [
            "/etc/passwd",
            "src/a.rs",
            "/workspace/../etc/passwd",
            "/workspaces/x",
        ] {
            assert!(workspace_path(bad).is_err(), "{bad}");
        }
    }
}
