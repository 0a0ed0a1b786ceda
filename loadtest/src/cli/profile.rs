//! `frlab profile check|show|list`: validate a resilience profile and print the stack it
//! builds on every hop.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use lab_resilience::config::{HOPS, SERVICES};
use lab_resilience::profiles;
use lab_resilience::stack::{describe_client, describe_server};

#[derive(Debug, Args)]
pub struct ProfileArgs {
    #[command(subcommand)]
    pub command: ProfileCommand,
}

#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// Validate a profile; exit non-zero naming the bad key
    Check {
        /// A profile file (helm values YAML with a `resilience:` key) or a built-in name
        profile: String,
    },
    /// Print the effective client stack of each hop and server stack of each service
    Show {
        /// A profile file or a built-in name
        profile: String,
    },
    /// List the built-in profiles with their descriptions
    List,
}

pub fn run(args: ProfileArgs) -> ExitCode {
    match args.command {
        ProfileCommand::Check { profile } => match profiles::resolve(&profile) {
            Ok(named) => {
                println!("{}: OK ({})", named.name, named.profile.description);
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        ProfileCommand::Show { profile } => match profiles::resolve(&profile) {
            Ok(named) => {
                print!("{}", show(&named));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        ProfileCommand::List => {
            for (name, _) in profiles::BUILTIN {
                let description = profiles::resolve(name)
                    .map(|n| n.profile.description)
                    .unwrap_or_else(|e| format!("INVALID: {e}"));
                println!("{name:<20} {description}");
            }
            ExitCode::SUCCESS
        }
    }
}

/// The text of `frlab profile show`.
pub fn show(named: &profiles::Named) -> String {
    let p = &named.profile;
    let mut out = format!("profile {}: {}\n", named.name, p.description);
    out.push_str(&format!(
        "idempotency keys: {}\nnotifications: {}\n",
        if p.idempotency.enabled {
            format!("on (replayable for {} s)", p.idempotency.ttl_s)
        } else {
            "off".into()
        },
        if p.outbox {
            "transactional outbox (at least once)"
        } else {
            "direct call after commit (best effort)"
        }
    ));
    // Who calls each hop: the request flow of `measure::HOPS`.
    let callers = |hop: &str| {
        crate::measure::HOPS
            .iter()
            .find(|h| h.name == hop)
            .map_or_else(
                || hop.to_string(),
                |h| format!("{} -> {}", h.caller, h.name),
            )
    };
    for hop in HOPS {
        out.push_str(&format!("\nclient {}:\n", callers(hop)));
        for line in describe_client(p, hop) {
            out.push_str(&format!("  {line}\n"));
        }
    }
    for service in SERVICES {
        out.push_str(&format!("\nserver {service}:\n"));
        for line in describe_server(p, service) {
            out.push_str(&format!("  {line}\n"));
        }
    }
    out
}
