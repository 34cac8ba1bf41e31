//! The command line as an option source, in uWSGI's form: `--key value`,
//! `--key=value`, `--flag`. It produces the same [`OptionList`] a file would.

use super::options::{spec, Arity, ConfigOption, OptionList, Origin};
use super::ConfigError;

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CliRequest {
    /// Run with these options.
    Run(OptionList),
    /// Print the help text.
    Help,
    /// Print the version.
    Version,
}

/// Parses the arguments after the program name.
pub fn parse_args<I: IntoIterator<Item = String>>(args: I) -> Result<CliRequest, ConfigError> {
    let args: Vec<String> = args.into_iter().collect();
    let mut list = OptionList::default();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        let origin = Origin::CommandLine(i + 1);
        let Some(body) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-').filter(|b| b.len() > 1)) else {
            return Err(ConfigError::StrayArgument { arg: arg.clone(), origin });
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
        match name {
            "help" => return Ok(CliRequest::Help),
            "version" => return Ok(CliRequest::Version),
            _ => {}
        }
        list.0.push(ConfigOption { key: name.to_owned(), value, origin });
        i += 1;
    }
    Ok(CliRequest::Run(list))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<CliRequest, ConfigError> {
        parse_args(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn forms_and_accumulation() {
        let CliRequest::Run(list) = run(&["--http", "127.0.0.1:1", "--http=:2", "--die-on-term", "--listen", "5"]).unwrap() else {
            panic!()
        };
        let https: Vec<_> = list.all("http").map(|o| o.value.as_str()).collect();
        assert_eq!(https, [ "127.0.0.1:1", ":2" ]);
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
}
