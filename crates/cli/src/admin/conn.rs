//! Where the admin API is (`--server`) and how to print its answers (`--json`): accepted
//! after the command (`mezzanine move list --server URL`, anywhere among its arguments) and
//! before it (`mezzanine --server URL move list`).

/// `--server` and `--json` of an admin command (accepted anywhere after the command).
#[derive(Debug, Clone, clap::Args)]
pub struct Conn {
    /// Base URL of any server node (also accepted before the command).
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "MEZZANINE_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub server: String,
    /// Print the server's JSON answer (pretty) on stdout instead of tables (also accepted
    /// before the command).
    #[arg(long, global = true)]
    pub json: bool,
    /// Bearer token with scope admin (default: $MEZZANINE_TOKEN, else the token `mezzanine
    /// dev` wrote in .mezzanine/mezzanine.env when that file names this server). Prefer the
    /// variable: a command line is visible to other users of the machine.
    #[arg(
        long,
        global = true,
        value_name = "TOKEN",
        env = "MEZZANINE_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,
}

impl Conn {
    /// The token to send ([`crate::token::resolve`]).
    pub fn token(&self) -> Option<String> {
        crate::token::resolve(self.token.as_deref(), &self.server)
    }
}

/// `--server` and `--json` given before the command: `mezzanine --server URL move list`. Their
/// ids differ from [`Conn`]'s, so that clap never mixes the values of the two places.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Before {
    /// Base URL of any server node, for the admin commands (also accepted after the command;
    /// default: $MEZZANINE_URL, else http://127.0.0.1:8080).
    #[arg(id = "server_before", long = "server", value_name = "URL")]
    pub server: Option<String>,
    /// Admin commands: print the server's JSON answer instead of tables (also accepted after
    /// the command).
    #[arg(id = "json_before", long = "json")]
    pub json: bool,
}

impl Before {
    /// Whether any was given (only the admin commands take them).
    pub fn given(&self) -> bool {
        self.server.is_some() || self.json
    }
}

/// The command's `conn` with what came before it: a `--server` before the command counts
/// unless one came after it too (`given_after`), when both must name the same server; it
/// wins over `MEZZANINE_URL` and the default. `--json` anywhere counts.
pub fn merge(conn: &mut Conn, before: &Before, given_after: bool) -> Result<(), String> {
    if let Some(server) = &before.server {
        if !given_after {
            conn.server = server.clone();
        } else if *server != conn.server {
            return Err(format!(
                "--server is given twice, before the command ({server}) and after it ({}): give it once",
                conn.server
            ));
        }
    }
    conn.json |= before.json;
    Ok(())
}
