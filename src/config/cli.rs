//! The command line as an option source, in uWSGI's form: `--key value`,
//! `--key=value`, `--flag`, plus configuration files: `--yaml FILE[:SECTION]`,
//! `--ini FILE[:SECTION]` and bare `FILE.yml`/`.yaml`/`.ini` arguments.
//!
//! Files and flags combine in the order given into one [`OptionList`], exactly as if
//! each file's entries had been typed at the file's place on the command line;
//! placeholders are expanded once everything is read (see
//! [`placeholders`](super::placeholders)).

use super::files::{FileSource, Format};
use super::options::{spec, Arity, ConfigOption, Kind, OptionList, Origin};
use super::placeholders::{resolve, RawOption};
use super::ConfigError;

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CliRequest {
    /// Run with these options.
    Run(OptionList),
    /// `--check-config`: validate these options, print them, bind nothing.
    CheckConfig(OptionList),
    /// `--print-options`: print these options as read, for another program
    /// (the `zergling` command reads uWSGI files through this, not a parser of
    /// its own), without validating their meaning.
    PrintOptions(OptionList),
    /// Print the help text.
    Help,
    /// Print the version.
    Version,
}

/// Parses the arguments after the program name, reading the files they name;
/// `$(NAME)` placeholders read the process environment.
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<CliRequest, ConfigError> {
    parse_args_with_env(args, &|name| std::env::var(name).ok())
}

/// [`parse_args`] with the environment given as a lookup function.
pub fn parse_args_with_env<I: IntoIterator<Item = String>>(
    args: I,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<CliRequest, ConfigError> {
    let args: Vec<String> = args.into_iter().collect();
    let mut raw: Vec<RawOption> = Vec::new();
    let mut check_only = false;
    let mut print_only = false;
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        let origin = Origin::CommandLine(i + 1);
        let Some(body) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-').filter(|b| b.len() > 1)) else {
            let Some(source) = FileSource::from_extension(arg) else {
                return Err(ConfigError::StrayArgument { arg: arg.clone(), origin });
            };
            raw.extend(source.load(&origin)?);
            i += 1;
            continue;
        };
        let (name, inline) = match body.split_once('=') {
            Some((n, v)) => (n, Some(v.to_owned())),
            None => (body, None),
        };
        let Some(s) = spec(name) else {
            return Err(ConfigError::unknown(name, origin));
        };
        let value = match (s.arity, inline) {
            (_, Some(v)) => v,
            (Arity::Flag | Arity::OptionalValue, None) => String::new(),
            (Arity::Value, None) => {
                i += 1;
                match args.get(i) {
                    Some(v) => v.clone(),
                    None => return Err(ConfigError::MissingValue { key: name.to_owned(), origin }),
                }
            }
        };
        i += 1;
        if s.kind == Kind::CommandLine {
            match name {
                "help" => return Ok(CliRequest::Help),
                "version" => return Ok(CliRequest::Version),
                "check-config" => check_only = true,
                "print-options" => print_only = true,
                "yaml" => raw.extend(FileSource::from_flag(Format::Yaml, &value).load(&origin)?),
                "ini" => raw.extend(FileSource::from_flag(Format::Ini, &value).load(&origin)?),
                _ => {}
            }
            continue;
        }
        raw.push(RawOption { option: ConfigOption { key: name.to_owned(), value, origin }, file: None });
    }
    let list = resolve(raw, env)?;
    Ok(if print_only {
        CliRequest::PrintOptions(list)
    } else if check_only {
        CliRequest::CheckConfig(list)
    } else {
        CliRequest::Run(list)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<CliRequest, ConfigError> {
        parse_args_with_env(args.iter().map(|s| s.to_string()), &|_| None)
    }

    #[test]
    fn forms_and_accumulation() {
        let CliRequest::Run(list) =
            run(&["--http", "127.0.0.1:1", "--http=:2", "--die-on-term", "--listen", "5"]).unwrap()
        else {
            panic!()
        };
        let https: Vec<_> = list.all("http").map(|o| o.value.as_str()).collect();
        assert_eq!(https, ["127.0.0.1:1", ":2"]);
        assert_eq!(list.last("die-on-term").unwrap().value, "");
        assert_eq!(list.last("listen").unwrap().origin, Origin::CommandLine(5));
    }

    #[test]
    fn unknown_names_the_nearest() {
        let err = run(&["--htpp", "x"]).unwrap_err();
        assert!(err.to_string().contains("did you mean --http?"), "{err}");
    }

    #[test]
    fn missing_value_and_help() {
        assert!(matches!(run(&["--http"]), Err(ConfigError::MissingValue { .. })));
        assert_eq!(run(&["--http", "x", "--help"]).unwrap(), CliRequest::Help);
        assert_eq!(run(&["--version"]).unwrap(), CliRequest::Version);
    }

    #[test]
    fn check_config_and_placeholders() {
        let CliRequest::CheckConfig(list) = parse_args_with_env(
            ["--http", ":1", "--check-config", "--zerg-server", "$(DIR)/%(http)"].map(String::from),
            &|k| (k == "DIR").then(|| "/run".to_string()),
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(list.last("zerg-server").unwrap().value, "/run/:1");
        assert!(list.last("check-config").is_none());
    }

    #[test]
    fn stray_words_and_missing_files() {
        assert!(matches!(run(&["serve"]), Err(ConfigError::StrayArgument { .. })));
        let e = run(&["--http", ":1", "/nonexistent/zergpool.yml"]).unwrap_err();
        assert!(matches!(&e, ConfigError::ReadFile { origin: Origin::CommandLine(3), .. }), "{e}");
        let e = run(&["--yaml", "/nonexistent/zergpool.yml:other"]).unwrap_err();
        assert!(e.to_string().contains("`/nonexistent/zergpool.yml`"), "{e}");
    }
}
