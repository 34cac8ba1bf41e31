//! Fuzz target `config_file`: a configuration file as an operator (or an attacker
//! with write access to one) could write it, read the whole way the pool reads it:
//! the YAML or INI dialect (`config::yaml`, `config::ini`), placeholder expansion
//! (`%(name)` references, `%x` magic, `$(ENV)`), then the typed configuration
//! (`Config::from_options`) and the static-map options.
//!
//! The first input byte picks the dialect (even: YAML, odd: INI); the rest is the
//! file. Beyond "never panics, never loops, never overflows the stack" (libFuzzer's
//! timeout and the 64-deep placeholder limit), every error must render as a message.

#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use zergpool::config::cli::{parse_args_with_env, CliRequest};
use zergpool::config::Config;
use zergpool::config::StaticConfig;

thread_local! {
    static DIR: PathBuf = {
        let dir = std::env::temp_dir().join(format!("zergpool-fuzz-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        dir
    };
}

fuzz_target!(|data: &[u8]| {
    let Some((&dialect, text)) = data.split_first() else {
        return;
    };
    let (flag, name) = if dialect % 2 == 0 { ("--yaml", "fuzz.yml") } else { ("--ini", "fuzz.ini") };
    let path = DIR.with(|d| d.join(name));
    std::fs::write(&path, text).expect("writing the scratch file");
    let env = |name: &str| match name {
        "HOME" => Some("/home/galaxy".to_owned()),
        "LOOP" => Some("$(LOOP)%(LOOP)".to_owned()),
        _ => None,
    };
    let args = vec![flag.to_owned(), path.display().to_string()];
    match parse_args_with_env(args, &env) {
        Ok(CliRequest::Run(list) | CliRequest::CheckConfig(list)) => {
            let _ = list.render();
            match Config::from_options(&list) {
                Ok(config) => {
                    let _ = config.notices();
                }
                Err(e) => assert!(!e.to_string().is_empty()),
            }
            if let Err(e) = StaticConfig::parse(&list) {
                assert!(!e.to_string().is_empty());
            }
        }
        Ok(_) => {}
        Err(e) => assert!(!e.to_string().is_empty()),
    }
});
