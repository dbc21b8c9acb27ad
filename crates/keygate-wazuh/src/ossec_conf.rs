//! The parts of a manager's ossec.conf that decide how Wazuh asks keygate
//! and what it does with an answer, read as Wazuh reads them, for `keygate
//! check`:
//!
//! - `<auth><key_request>` (4.4+, wazuh-authd): the first one counts, and it
//!   wins over the old block;
//! - `<wodle name="agent-key-polling">` (3.8-4.3, wazuh-modulesd; still read
//!   by 4.4+ authd when there is no `<key_request>`): the last one counts;
//! - `<auth><force>` (4.3+) and the legacy `<auth><force_insert>` and
//!   `<force_time>`, which decide whether a served agent may replace one
//!   with the same id, name or ip.
//!
//! ossec.conf is XML-ish: several `<ossec_config>` roots in one file are
//! normal, and a bare `&` happens. It is read with quick-xml, a streaming
//! parser that takes several roots as they come and can be told to let a
//! dangling `&` through, so the file needs no rewriting first (roxmltree and
//! xml-rs insist on a single root). Only elements inside `<ossec_config>`
//! roots are read, as Wazuh does.

use std::path::Path;
use std::time::Duration;

use quick_xml::events::{BytesStart, Event};
use quick_xml::Reader;

/// One `<key_request>` or `<wodle name="agent-key-polling">` block, as
/// written (values trimmed; `None` when absent).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyRequest {
    /// `<enabled>`: `yes` (the default once the block exists) or `no`.
    pub enabled: Option<String>,
    /// `<socket>`: the Unix socket Wazuh asks.
    pub socket: Option<String>,
    /// `<exec_path>`: the command Wazuh runs, split into words.
    pub exec_path: Option<String>,
    /// `<timeout>`: seconds Wazuh waits for an answer (default 60).
    pub timeout: Option<String>,
    /// `<threads>` (default 1).
    pub threads: Option<String>,
    /// `<queue_size>` (default 1024).
    pub queue_size: Option<String>,
    /// `<force_insert>`: honoured by the old module (default yes), ignored
    /// by 4.4+ authd.
    pub force_insert: Option<String>,
    /// The line the block starts on.
    pub line: u32,
}

/// `<auth><force>`, as written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Force {
    /// `<enabled>` (default yes).
    pub enabled: Option<String>,
    /// `<key_mismatch>` (default yes).
    pub key_mismatch: Option<String>,
    /// `<disconnected_time>`'s text (default 1h).
    pub disconnected_time: Option<String>,
    /// `<disconnected_time enabled="...">` (default yes).
    pub disconnected_time_enabled: Option<String>,
    /// `<after_registration_time>` (default 1h).
    pub after_registration_time: Option<String>,
}

/// What ossec.conf says about key requests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OssecConf {
    /// The first `<auth><key_request>`.
    pub key_request: Option<KeyRequest>,
    /// The last `<wodle name="agent-key-polling">`.
    pub key_polling: Option<KeyRequest>,
    /// Whether there is an `<auth>` block.
    pub auth: bool,
    /// The last `<auth><force>`.
    pub force: Option<Force>,
    /// `<auth><force_insert>` (before `<force>`; deprecated since 4.3).
    pub legacy_force_insert: Option<String>,
    /// `<auth><force_time>` (before `<force>`; deprecated since 4.3).
    pub legacy_force_time: Option<String>,
}

/// Why ossec.conf could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct ReadError {
    /// The file.
    pub path: String,
    /// Why, with the line when the XML is broken.
    pub reason: String,
}

/// Reads and parses the file at `path`.
pub fn read(path: &Path) -> Result<OssecConf, ReadError> {
    let fail = |reason: String| ReadError {
        path: path.display().to_string(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    let text = String::from_utf8_lossy(&bytes);
    parse(&text).map_err(fail)
}

/// Which block an element's text belongs to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Block {
    KeyRequest,
    KeyPolling,
    Force,
    Auth,
}

/// Parses ossec.conf text; the error names the line of broken XML.
pub fn parse(text: &str) -> Result<OssecConf, String> {
    let mut reader = Reader::from_str(text);
    let config = reader.config_mut();
    config.allow_dangling_amp = true;
    config.check_end_names = true;
    let mut conf = OssecConf::default();
    // Element names from the root down, and the block being read.
    let mut path: Vec<String> = Vec::new();
    let mut block: Option<(Block, usize)> = None;
    let mut current = KeyRequest::default();
    let mut force = Force::default();
    let mut first_key_request = true;
    let mut text_buf = String::new();
    loop {
        let at = reader.buffer_position();
        let event = reader.read_event().map_err(|e| {
            let line = line_of(text, reader.error_position());
            format!("not well-formed XML at line {line}: {e}")
        })?;
        match event {
            Event::Start(e) => {
                let name = element_name(&e);
                let depth = path.len();
                if block.is_none() && path.first().is_some_and(|r| r == "ossec_config") {
                    let line = line_of(text, at);
                    block = match (depth, name.as_str(), path.get(1).map(String::as_str)) {
                        (1, "auth", _) => {
                            conf.auth = true;
                            Some((Block::Auth, depth))
                        }
                        (1, "wodle", _)
                            if attribute(&e, "name").as_deref() == Some("agent-key-polling") =>
                        {
                            current = KeyRequest {
                                line,
                                ..KeyRequest::default()
                            };
                            Some((Block::KeyPolling, depth))
                        }
                        _ => None,
                    };
                } else if let Some((Block::Auth, start)) = block {
                    if depth == start + 1 {
                        match name.as_str() {
                            "key_request" => {
                                current = KeyRequest {
                                    line: line_of(text, at),
                                    ..KeyRequest::default()
                                };
                                block = Some((Block::KeyRequest, depth));
                            }
                            "force" => {
                                force = Force::default();
                                block = Some((Block::Force, depth));
                            }
                            _ => {}
                        }
                    }
                }
                if let (Some((Block::Force, start)), "disconnected_time") = (block, name.as_str()) {
                    if depth == start + 1 {
                        force.disconnected_time_enabled = attribute(&e, "enabled");
                    }
                }
                path.push(name);
                text_buf.clear();
            }
            Event::Empty(e) => {
                let name = element_name(&e);
                if path.len() == 1
                    && path[0] == "ossec_config"
                    && name == "wodle"
                    && attribute(&e, "name").as_deref() == Some("agent-key-polling")
                {
                    conf.key_polling = Some(KeyRequest {
                        line: line_of(text, at),
                        ..KeyRequest::default()
                    });
                }
                if let (Some((Block::Auth, start)), "key_request") = (block, name.as_str()) {
                    if path.len() == start + 1 && first_key_request {
                        first_key_request = false;
                        conf.key_request = Some(KeyRequest {
                            line: line_of(text, at),
                            ..KeyRequest::default()
                        });
                    }
                }
            }
            Event::Text(t) => text_buf.push_str(&t.xml10_content()),
            Event::CData(t) => text_buf.push_str(&t),
            Event::GeneralRef(r) => match r.resolve_char_ref() {
                Ok(Some(c)) => text_buf.push(c),
                _ => match quick_xml::escape::resolve_xml_entity(&r) {
                    Some(s) => text_buf.push_str(s),
                    None => {
                        text_buf.push('&');
                        text_buf.push_str(&r);
                        text_buf.push(';');
                    }
                },
            },
            Event::End(_) => {
                let Some(name) = path.pop() else { continue };
                let depth = path.len();
                let value = text_buf.trim().to_owned();
                text_buf.clear();
                match block {
                    Some((kind, start)) if depth == start => match kind {
                        Block::KeyRequest => {
                            if first_key_request {
                                first_key_request = false;
                                conf.key_request = Some(std::mem::take(&mut current));
                            }
                            block = Some((Block::Auth, start - 1));
                        }
                        Block::KeyPolling => {
                            conf.key_polling = Some(std::mem::take(&mut current));
                            block = None;
                        }
                        Block::Force => {
                            conf.force = Some(std::mem::take(&mut force));
                            block = Some((Block::Auth, start - 1));
                        }
                        Block::Auth => block = None,
                    },
                    Some((Block::KeyRequest | Block::KeyPolling, start)) if depth == start + 1 => {
                        let field = match name.as_str() {
                            "enabled" => &mut current.enabled,
                            "socket" => &mut current.socket,
                            "exec_path" => &mut current.exec_path,
                            "timeout" => &mut current.timeout,
                            "threads" => &mut current.threads,
                            "queue_size" => &mut current.queue_size,
                            "force_insert" => &mut current.force_insert,
                            _ => continue,
                        };
                        *field = Some(value);
                    }
                    Some((Block::Force, start)) if depth == start + 1 => {
                        let field = match name.as_str() {
                            "enabled" => &mut force.enabled,
                            "key_mismatch" => &mut force.key_mismatch,
                            "disconnected_time" => &mut force.disconnected_time,
                            "after_registration_time" => &mut force.after_registration_time,
                            _ => continue,
                        };
                        *field = Some(value);
                    }
                    Some((Block::Auth, start)) if depth == start + 1 => match name.as_str() {
                        "force_insert" => conf.legacy_force_insert = Some(value),
                        "force_time" => conf.legacy_force_time = Some(value),
                        _ => {}
                    },
                    _ => {}
                }
            }
            Event::Eof => break,
            Event::Comment(_) | Event::Decl(_) | Event::PI(_) | Event::DocType(_) => {}
        }
    }
    if let Some(open) = path.last() {
        return Err(format!("not well-formed XML: <{open}> is never closed"));
    }
    Ok(conf)
}

fn element_name(e: &BytesStart<'_>) -> String {
    e.name().as_ref().to_owned()
}

fn attribute(e: &BytesStart<'_>, name: &str) -> Option<String> {
    e.attributes()
        .flatten()
        .find(|a| a.key.as_ref() == name)
        .map(|a| {
            a.normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map(|v| v.trim().to_owned())
                .unwrap_or_else(|_| a.value.trim().to_owned())
        })
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: u64) -> u32 {
    let end = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(text.len());
    let newlines = text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count();
    u32::try_from(newlines + 1).unwrap_or(u32::MAX)
}

/// Wazuh's `eval_bool`: exactly `yes` or `no`; absent is `default`.
pub fn yes_no(value: Option<&str>, default: bool) -> Result<bool, String> {
    match value {
        None => Ok(default),
        Some("yes") => Ok(true),
        Some("no") => Ok(false),
        Some(other) => Err(format!("'{other}' is neither yes nor no")),
    }
}

/// Wazuh's time intervals (`get_time_interval`): a number of seconds,
/// optionally followed by `s`, `m`, `h` or `d`.
pub fn interval(value: &str) -> Result<Duration, String> {
    let digits = value.trim_end_matches(['s', 'm', 'h', 'd']);
    let unit = &value[digits.len()..];
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{value}' is not a time interval (e.g. 1h, 30m, 3600)"))?;
    let scale = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "'{value}' is not a time interval (e.g. 1h, 30m, 3600)"
            ))
        }
    };
    Ok(Duration::from_secs(n.saturating_mul(scale)))
}

impl KeyRequest {
    /// Whether the block turns key requests on (`<enabled>`, default yes).
    pub fn enabled(&self) -> Result<bool, String> {
        yes_no(self.enabled.as_deref(), true)
    }

    /// Wazuh's wait for an answer (`<timeout>`, seconds, default 60).
    pub fn timeout(&self) -> Result<Duration, String> {
        match self.timeout.as_deref() {
            None => Ok(Duration::from_secs(60)),
            Some(t) => match t.parse::<u64>() {
                Ok(n) if n >= 1 => Ok(Duration::from_secs(n)),
                _ => Err(format!(
                    "<timeout> '{t}' is not a number of seconds (1 or more)"
                )),
            },
        }
    }
}

impl Force {
    /// The settings in one line, defaults filled in, as authd uses them.
    pub fn describe(&self) -> String {
        let show = |v: Option<&str>, default: &str| v.unwrap_or(default).to_owned();
        let disconnected = match yes_no(self.disconnected_time_enabled.as_deref(), true) {
            Ok(false) => "off".to_owned(),
            _ => show(self.disconnected_time.as_deref(), "1h"),
        };
        format!(
            "enabled {}, key_mismatch {}, disconnected_time {disconnected}, after_registration_time {}",
            show(self.enabled.as_deref(), "yes"),
            show(self.key_mismatch.as_deref(), "yes"),
            show(self.after_registration_time.as_deref(), "1h"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Several roots, comments, an XML declaration, a bare `&`, entities:
    /// read as Wazuh reads them.
    #[test]
    fn several_roots_comments_and_entities() {
        let conf = parse(
            r#"<?xml version="1.0"?>
<!-- Wazuh - Manager -->
<ossec_config>
  <global><email_notification>no</email_notification></global>
  <localfile><command>df -P &amp;&amp; echo & done</command></localfile>
  <auth>
    <disabled>no</disabled>
    <!-- <key_request><socket>/commented/out</socket></key_request> -->
    <key_request>
      <enabled>yes</enabled>
      <socket> /run/keygate/keygate.sock </socket>
      <exec_path>/usr/bin/keygate --config /etc/keygate/keygate&#46;toml</exec_path>
      <timeout>60</timeout>
    </key_request>
    <key_request><socket>/second/is/ignored</socket></key_request>
    <force>
      <enabled>yes</enabled>
      <disconnected_time enabled="no">2h</disconnected_time>
    </force>
  </auth>
</ossec_config>

<ossec_config>
  <wodle name="agent-key-polling">
    <enabled>no</enabled>
    <force_insert>no</force_insert>
  </wodle>
</ossec_config>
<agent_config><auth><key_request><socket>/not/read</socket></key_request></auth></agent_config>
"#,
        )
        .unwrap();
        let kr = conf.key_request.unwrap();
        assert_eq!(kr.socket.as_deref(), Some("/run/keygate/keygate.sock"));
        assert_eq!(
            kr.exec_path.as_deref(),
            Some("/usr/bin/keygate --config /etc/keygate/keygate.toml")
        );
        assert_eq!(kr.line, 9);
        assert!(kr.enabled().unwrap());
        assert_eq!(kr.timeout().unwrap(), Duration::from_secs(60));
        let polling = conf.key_polling.unwrap();
        assert!(!polling.enabled().unwrap());
        assert_eq!(polling.force_insert.as_deref(), Some("no"));
        let force = conf.force.unwrap();
        assert_eq!(
            force.describe(),
            "enabled yes, key_mismatch yes, disconnected_time off, after_registration_time 1h"
        );
        assert!(conf.auth);
    }

    /// Broken XML is an error naming its line; defaults and Wazuh's value
    /// rules.
    #[test]
    fn broken_xml_names_its_line_and_values_follow_wazuh() {
        let e = parse("<ossec_config>\n  <auth>\n  </ossec_config>\n").unwrap_err();
        assert!(e.contains("line 3"), "{e}");
        assert!(parse("<ossec_config>\n<auth>\n")
            .unwrap_err()
            .contains("never closed"));
        assert_eq!(parse("").unwrap(), OssecConf::default());
        let kr = KeyRequest {
            timeout: Some("0".into()),
            enabled: Some("true".into()),
            ..KeyRequest::default()
        };
        assert!(kr.timeout().is_err());
        assert!(kr.enabled().is_err());
        assert_eq!(interval("90m").unwrap(), Duration::from_secs(5400));
        assert_eq!(interval("3600").unwrap(), Duration::from_secs(3600));
        assert!(interval("1w").is_err());
        assert_eq!(
            Force::default().describe(),
            "enabled yes, key_mismatch yes, disconnected_time 1h, after_registration_time 1h"
        );
    }
}
