//! ParaView server resources: `cs://host:port`, `csrc://[host][:port]`, `cdsrs://ds:p//rs:p`,
//! `cdsrsrc://...` (the render server may also follow a single `/`), and `builtin:`.
//!
//! Read as ParaView 5.11 reads them (measured): `cs://user@Host:1` is host `host` (QUrl drops
//! the user info and lower-cases the host); the render host of `cdsrs://` keeps its case.

use std::fmt;

use serde::Serialize;

pub const DEFAULT_PORT: u16 = 11111;
pub const DEFAULT_RENDER_PORT: u16 = 22221;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scheme {
    Builtin,
    Cs,
    Csrc,
    Cdsrs,
    Cdsrsrc,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Builtin => "builtin",
            Scheme::Cs => "cs",
            Scheme::Csrc => "csrc",
            Scheme::Cdsrs => "cdsrs",
            Scheme::Cdsrsrc => "cdsrsrc",
        }
    }

    /// Reverse schemes: the client listens and pvserver connects to it.
    pub fn is_reverse(self) -> bool {
        matches!(self, Scheme::Csrc | Scheme::Cdsrsrc)
    }

    pub const ALL: [&'static str; 5] = ["builtin", "cs", "csrc", "cdsrs", "cdsrsrc"];
}

/// A parsed resource. Ports are `None` when the URI leaves them out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resource {
    pub scheme: Scheme,
    pub host: String,
    pub port: Option<u16>,
    pub render_host: String,
    pub render_port: Option<u16>,
}

/// What the client does for this resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum Endpoint {
    /// Nothing to connect to (built-in session).
    Builtin,
    /// The client connects to pvserver (`cs://`).
    Connect {
        host: String,
        port: u16,
    },
    /// The client listens and pvserver connects back (`csrc://`); the host is ignored.
    Listen {
        port: u16,
    },
    /// Separate data and render servers.
    ConnectSplit {
        data_host: String,
        data_port: u16,
        render_host: String,
        render_port: u16,
    },
    ListenSplit {
        data_port: u16,
        render_port: u16,
    },
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Builtin => write!(f, "built-in session (no server)"),
            Endpoint::Connect { host, port } => write!(f, "client connects to {host}:{port}"),
            Endpoint::Listen { port } => write!(f, "client listens on port {port}"),
            Endpoint::ConnectSplit {
                data_host,
                data_port,
                render_host,
                render_port,
            } => write!(
                f,
                "client connects to data server {data_host}:{data_port} and render server {render_host}:{render_port}"
            ),
            Endpoint::ListenSplit {
                data_port,
                render_port,
            } => write!(
                f,
                "client listens on port {data_port} (data server) and {render_port} (render server)"
            ),
        }
    }
}

impl Resource {
    /// Parse a resource URI as ParaView does; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Resource, String> {
        let uri = text.split(';').next().unwrap_or("");
        let uri = uri.split('#').next().unwrap_or("");
        let (scheme_text, rest) = uri.split_once(':').ok_or_else(|| {
            format!("`{text}` has no scheme (expected cs://, csrc://, cdsrs:// or cdsrsrc://)")
        })?;
        let scheme = match scheme_text.to_ascii_lowercase().as_str() {
            "builtin" => Scheme::Builtin,
            "cs" => Scheme::Cs,
            "csrc" => Scheme::Csrc,
            "cdsrs" => Scheme::Cdsrs,
            "cdsrsrc" => Scheme::Cdsrsrc,
            other => return Err(format!("unknown scheme `{other}`")),
        };
        let mut resource = Resource {
            scheme,
            host: String::new(),
            port: None,
            render_host: String::new(),
            render_port: None,
        };
        if scheme == Scheme::Builtin {
            return Ok(resource);
        }
        let rest = rest
            .strip_prefix("//")
            .ok_or_else(|| format!("`{text}` should continue with `//` after `{scheme_text}:`"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        // QUrl drops the user info and writes the host in lower case; the render server is
        // read from the path by a regular expression, as written.
        let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let (host, port) = split_host_port(authority)?;
        resource.host = host.to_ascii_lowercase();
        resource.port = port;
        if matches!(scheme, Scheme::Cdsrs | Scheme::Cdsrsrc) {
            // The render server follows one or two slashes.
            let render = path.trim_start_matches('/');
            let render = render.split('/').next().unwrap_or("");
            let (rhost, rport) = split_host_port(render)?;
            resource.render_host = rhost;
            resource.render_port = rport;
        }
        Ok(resource)
    }

    pub fn is_reverse(&self) -> bool {
        self.scheme.is_reverse()
    }

    fn split(&self) -> bool {
        matches!(self.scheme, Scheme::Cdsrs | Scheme::Cdsrsrc)
    }

    /// `PV_SERVER_HOST`: empty for split servers, as in ParaView.
    pub fn server_host(&self) -> &str {
        if self.split() { "" } else { &self.host }
    }

    /// `PV_SERVER_PORT`'s notion of the port: 11111 when absent; none for split servers.
    pub fn server_port(&self) -> Option<u16> {
        if self.split() {
            None
        } else {
            Some(self.port.unwrap_or(DEFAULT_PORT))
        }
    }

    pub fn data_server_host(&self) -> &str {
        if self.split() { &self.host } else { "" }
    }

    pub fn data_server_port(&self) -> Option<u16> {
        self.split().then(|| self.port.unwrap_or(DEFAULT_PORT))
    }

    pub fn render_server_host(&self) -> &str {
        if self.split() { &self.render_host } else { "" }
    }

    pub fn render_server_port(&self) -> Option<u16> {
        self.split()
            .then(|| self.render_port.unwrap_or(DEFAULT_RENDER_PORT))
    }

    /// `scheme://host[:port]` (and `//rhost[:rport]`), like ParaView's `schemeHostsPorts()`.
    pub fn uri(&self) -> String {
        let mut out = format!("{}:", self.scheme.as_str());
        if self.scheme == Scheme::Builtin {
            return out;
        }
        out.push_str("//");
        out.push_str(&self.host);
        if let Some(p) = self.port {
            out.push_str(&format!(":{p}"));
        }
        if self.split() {
            out.push_str("//");
            out.push_str(&self.render_host);
            if let Some(p) = self.render_port {
                out.push_str(&format!(":{p}"));
            }
        }
        out
    }

    /// What the client does, with default ports filled in.
    pub fn endpoint(&self) -> Endpoint {
        match self.scheme {
            Scheme::Builtin => Endpoint::Builtin,
            Scheme::Cs => Endpoint::Connect {
                host: self.host.clone(),
                port: self.port.unwrap_or(DEFAULT_PORT),
            },
            Scheme::Csrc => Endpoint::Listen {
                port: self.port.unwrap_or(DEFAULT_PORT),
            },
            Scheme::Cdsrs => Endpoint::ConnectSplit {
                data_host: self.host.clone(),
                data_port: self.port.unwrap_or(DEFAULT_PORT),
                render_host: self.render_host.clone(),
                render_port: self.render_port.unwrap_or(DEFAULT_RENDER_PORT),
            },
            Scheme::Cdsrsrc => Endpoint::ListenSplit {
                data_port: self.port.unwrap_or(DEFAULT_PORT),
                render_port: self.render_port.unwrap_or(DEFAULT_RENDER_PORT),
            },
        }
    }
}

fn split_host_port(authority: &str) -> Result<(String, Option<u16>), String> {
    // An IPv6 literal is bracketed: [::1]:11111.
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("`{authority}`: unclosed `[` in an IPv6 address"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(parse_port(p)?),
            None if after.is_empty() => None,
            None => {
                return Err(format!(
                    "`{authority}`: unexpected `{after}` after the address"
                ));
            }
        };
        return Ok((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, "")) => Ok((host.to_string(), None)),
        Some((host, port)) => Ok((host.to_string(), Some(parse_port(port)?))),
        None => Ok((authority.to_string(), None)),
    }
}

fn parse_port(text: &str) -> Result<u16, String> {
    text.parse::<u16>()
        .map_err(|_| format!("`{text}` is not a port number (0 to 65535)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_server_and_reverse() {
        let r = Resource::parse("cs://localhost:11112").unwrap();
        assert_eq!(
            r.endpoint(),
            Endpoint::Connect {
                host: "localhost".into(),
                port: 11112
            }
        );
        assert_eq!(r.uri(), "cs://localhost:11112");
        let r = Resource::parse("csrc://:11111").unwrap();
        assert_eq!(r.server_host(), "");
        assert_eq!(r.endpoint(), Endpoint::Listen { port: 11111 });
        let r = Resource::parse("csrc://frontier.olcf.ornl.gov").unwrap();
        assert_eq!(r.port, None);
        assert_eq!(r.server_port(), Some(11111));
        assert_eq!(r.uri(), "csrc://frontier.olcf.ornl.gov");
    }

    #[test]
    fn split_servers_take_one_or_two_slashes() {
        for text in ["cdsrs://ds:1//rs:2", "cdsrs://ds:1/rs:2"] {
            let r = Resource::parse(text).unwrap();
            assert_eq!((r.host.as_str(), r.port), ("ds", Some(1)));
            assert_eq!((r.render_host.as_str(), r.render_port), ("rs", Some(2)));
            assert_eq!(r.server_port(), None);
            assert_eq!(r.uri(), "cdsrs://ds:1//rs:2");
        }
        let r = Resource::parse("cdsrsrc://").unwrap();
        assert_eq!(
            r.endpoint(),
            Endpoint::ListenSplit {
                data_port: 11111,
                render_port: 22221
            }
        );
    }

    #[test]
    fn user_info_is_dropped_and_hosts_lower_cased_like_qurl() {
        let r = Resource::parse("cs://alice@Cluster.Invalid:39112").unwrap();
        assert_eq!((r.host.as_str(), r.port), ("cluster.invalid", Some(39112)));
        assert_eq!(r.uri(), "cs://cluster.invalid:39112");
        let r = Resource::parse("cdsrs://DS:1/RS:2").unwrap();
        assert_eq!((r.host.as_str(), r.render_host.as_str()), ("ds", "RS"));
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(
            Resource::parse("http://x")
                .unwrap_err()
                .contains("unknown scheme")
        );
        assert!(
            Resource::parse("cs://x:99999")
                .unwrap_err()
                .contains("port")
        );
        assert!(
            Resource::parse("localhost")
                .unwrap_err()
                .contains("no scheme")
        );
        assert_eq!(
            Resource::parse("builtin:").unwrap().endpoint(),
            Endpoint::Builtin
        );
        let v6 = Resource::parse("cs://[::1]:5").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", Some(5)));
    }
}
