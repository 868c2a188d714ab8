//! Configuration layering: defaults, then file, then environment.

use std::path::Path;

use memlayer_app::{Config, ConfigError};

fn load(jail: &figment::Jail, file: Option<&str>) -> Result<Config, ConfigError> {
    let _ = jail;
    Config::load(file.map(Path::new))
}

#[test]
fn defaults_apply_without_file_or_environment() {
    figment::Jail::expect_with(|jail| {
        let c = load(jail, None).map_err(|e| e.to_string())?;
        assert_eq!(c, Config::default());
        assert_eq!(c.server.addr.to_string(), "127.0.0.1:8080");
        assert!(c.database.url.is_none(), "embedded file by default");
        assert_eq!(c.database.statement_timeout_ms, 30_000, "30 s per Postgres statement");
        assert!(!c.database.allow_rls_bypass, "a role that bypasses row-level security is refused");
        assert_eq!(c.server.idempotency_ttl_secs, 86_400, "idempotency keys are remembered 24 h");
        jail.set_env("MEMLAYER_SERVER__IDEMPOTENCY_TTL_SECS", "60");
        assert_eq!(load(jail, None).map_err(|e| e.to_string())?.server.idempotency_ttl_secs, 60);
        Ok(())
    });
}

#[test]
fn file_overrides_defaults_and_environment_overrides_file() {
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "memlayer.toml",
            r#"
            data_dir = "/from/file"
            [server]
            addr = "0.0.0.0:9000"
            body_limit_bytes = 4096
            [log]
            format = "json"
            "#,
        )?;
        let c = load(jail, Some("memlayer.toml")).map_err(|e| e.to_string())?;
        assert_eq!(c.data_dir, Path::new("/from/file"));
        assert_eq!(c.server.addr.to_string(), "0.0.0.0:9000");
        assert_eq!(c.log.format, memlayer_app::LogFormat::Json);

        jail.set_env("MEMLAYER_DATA_DIR", "/from/env");
        jail.set_env("MEMLAYER_SERVER__BODY_LIMIT_BYTES", "2048");
        // Variables of the scripts, not configuration keys (the README's run
        // command failed on MEMLAYER_CACHE_DIR before they were set apart).
        jail.set_env("MEMLAYER_CACHE_DIR", "/tmp/cache");
        jail.set_env("MEMLAYER_PYTHON", "python3");
        jail.set_env("LIBSQL_DATABASE_URL", "libsql://db.example.invalid");
        jail.set_env("LIBSQL_AUTH_TOKEN", "s3cret");
        let c = load(jail, Some("memlayer.toml")).map_err(|e| e.to_string())?;
        assert_eq!(c.data_dir, Path::new("/from/env"));
        assert_eq!(c.server.body_limit_bytes, 2048);
        assert_eq!(c.server.addr.to_string(), "0.0.0.0:9000", "file value kept where env is silent");
        assert_eq!(c.database.url.as_ref().map(memlayer_app::Secret::expose), Some("libsql://db.example.invalid"));
        assert_eq!(c.database.auth_token.as_ref().map(|s| s.expose()), Some("s3cret"));
        assert!(!format!("{c:?}").contains("s3cret"), "secrets never appear in Debug output");
        Ok(())
    });
}

#[test]
fn config_file_named_by_environment_is_read() {
    figment::Jail::expect_with(|jail| {
        jail.create_file("other.toml", "[memory]\ndefault_tenant = \"team-a\"\n")?;
        jail.set_env("MEMLAYER_CONFIG", "other.toml");
        let c = load(jail, None).map_err(|e| e.to_string())?;
        assert_eq!(c.memory.default_tenant, "team-a");
        Ok(())
    });
}

#[test]
fn bad_values_name_the_key_to_fix() {
    let check = |toml: &str, needle: &str| {
        figment::Jail::expect_with(|jail| {
            jail.create_file("bad.toml", toml)?;
            let err = load(jail, Some("bad.toml")).unwrap_err().to_string();
            assert!(err.contains(needle), "{toml:?}: {err}");
            Ok(())
        });
    };
    check("[server]\naddr = \"nope\"\n", "addr");
    check("[server]\nbody_limit_bytes = 10\n", "server.body_limit_bytes");
    check("[memory]\ndefault_tenant = \"has space\"\n", "memory.default_tenant");
    check("[log]\nformat = \"xml\"\n", "log.format");
    check("unknown_key = 1\n", "unknown_key");
    check("[database]\nreaders = 0\n", "database.readers");
    check("[server]\nidempotency_ttl_secs = 0\n", "server.idempotency_ttl_secs");
    check("[server]\nidempotency_ttl_secs = 31536001\n", "server.idempotency_ttl_secs");
    check("[memory]\nsweep_chunk = 0\n", "memory.sweep_chunk");
    check("[memory]\nsweep_chunk = 100001\n", "memory.sweep_chunk");
}

#[test]
fn a_missing_config_file_is_an_error() {
    figment::Jail::expect_with(|jail| {
        assert!(load(jail, Some("does-not-exist.toml")).is_err());
        Ok(())
    });
}

#[test]
fn database_url_selects_postgres_and_libsql_stays_the_default() {
    figment::Jail::expect_with(|jail| {
        let url = |c: &Config| c.database.url.as_ref().map(|u| u.expose().to_owned());
        let c = load(jail, None).map_err(|e| e.to_string())?;
        assert!(!c.is_postgres(), "embedded libSQL by default");
        jail.set_env("DATABASE_URL", "postgres://app:pw@db.example:5432/mem");
        let c = load(jail, None).map_err(|e| e.to_string())?;
        assert!(c.is_postgres());
        assert_eq!(url(&c).as_deref(), Some("postgres://app:pw@db.example:5432/mem"));
        assert_eq!(c.search.pgvector, memlayer_app::PgvectorConfig::default());
        assert_eq!((c.search.pgvector.m, c.search.pgvector.ef_construction, c.search.pgvector.ef_search), (16, 64, 40));

        jail.set_env("LIBSQL_DATABASE_URL", "libsql://db.example.invalid");
        let err = load(jail, None).unwrap_err().to_string();
        assert!(err.contains("DATABASE_URL") && err.contains("LIBSQL_DATABASE_URL"), "{err}");
        jail.set_env("DATABASE_URL", "");
        let c = load(jail, None).map_err(|e| e.to_string())?;
        assert!(!c.is_postgres(), "LIBSQL_DATABASE_URL keeps selecting remote libSQL");
        assert_eq!(url(&c).as_deref(), Some("libsql://db.example.invalid"));
        jail.set_env("LIBSQL_DATABASE_URL", "");

        jail.create_file(
            "pg.toml",
            "[database]\nurl = \"postgresql://app@h/mem\"\n[search.pgvector]\nef_search = 100\n",
        )?;
        let c = load(jail, Some("pg.toml")).map_err(|e| e.to_string())?;
        assert!(c.is_postgres(), "postgresql:// in the file");
        assert_eq!(c.search.pgvector.ef_search, 100);
        jail.set_env("MEMLAYER_DATABASE__URL", "postgres://app@other/mem");
        let c = load(jail, Some("pg.toml")).map_err(|e| e.to_string())?;
        assert_eq!(url(&c).as_deref(), Some("postgres://app@other/mem"));
        Ok(())
    });
}

#[test]
fn postgres_settings_are_validated() {
    figment::Jail::expect_with(|jail| {
        let check = |jail: &mut figment::Jail, var: &str, value: &str, key: &str| {
            jail.set_env(var, value);
            let err = load(jail, None).unwrap_err().to_string();
            assert!(err.contains(key), "{var}={value}: {err}");
        };
        check(jail, "MEMLAYER_DATABASE__URL", "mysql://h/db", "unknown scheme `mysql://`");
        jail.set_env("MEMLAYER_DATABASE__URL", "postgres://app@h/mem");
        check(jail, "MEMLAYER_SEARCH__INDEX", "libsql", "search.index");
        jail.set_env("MEMLAYER_SEARCH__INDEX", "pgvector");
        load(jail, None).map_err(|e| e.to_string())?;
        check(jail, "MEMLAYER_SEARCH__PGVECTOR__METRIC", "manhattan", "search.pgvector.metric");
        jail.set_env("MEMLAYER_SEARCH__PGVECTOR__METRIC", "l2");
        check(jail, "MEMLAYER_SEARCH__PGVECTOR__EF_CONSTRUCTION", "20", "search.pgvector.ef_construction");
        jail.set_env("MEMLAYER_SEARCH__PGVECTOR__EF_CONSTRUCTION", "64");
        check(jail, "MEMLAYER_DATABASE__POOL_SIZE", "0", "database.pool_size");
        jail.set_env("MEMLAYER_DATABASE__POOL_SIZE", "8");
        check(jail, "MEMLAYER_DATABASE__STATEMENT_TIMEOUT_MS", "2147483648", "database.statement_timeout_ms");
        jail.set_env("MEMLAYER_DATABASE__STATEMENT_TIMEOUT_MS", "0");
        jail.set_env("MEMLAYER_DATABASE__ALLOW_RLS_BYPASS", "true");
        let c = load(jail, None).map_err(|e| e.to_string())?;
        assert_eq!((c.database.statement_timeout_ms, c.database.allow_rls_bypass), (0, true));
        jail.set_env("MEMLAYER_DATABASE__URL", ":memory:");
        check(jail, "MEMLAYER_SEARCH__INDEX", "pgvector", "search.index");
        Ok(())
    });
}

#[test]
fn a_misspelt_environment_variable_is_an_error_naming_it() {
    figment::Jail::expect_with(|jail| {
        jail.set_env("MEMLAYER_SERVR__ADDR", "127.0.0.1:1");
        let err = load(jail, None).unwrap_err().to_string();
        assert!(err.to_lowercase().contains("servr"), "{err}");
        Ok(())
    });
}

#[test]
fn closed_sets_of_values_are_enums_whose_errors_name_key_and_choices() {
    figment::Jail::expect_with(|jail| {
        // Each bad value is put back to a good one before the next.
        let err = |jail: &mut figment::Jail, var: &str, bad: &str, good: &str| {
            jail.set_env(var, bad);
            let err = load(jail, None).unwrap_err().to_string();
            jail.set_env(var, good);
            err
        };
        let e = err(jail, "MEMLAYER_SEARCH__INDEX", "x", "exact");
        assert!(
            e.starts_with(
                "configuration: search.index: unknown value \"x\", expected one of `exact`, `hnsw`, `libsql`, `pgvector`"
            ),
            "{e}"
        );
        let e = err(jail, "MEMLAYER_EMBEDDING__MODE", "sometimes", "inline");
        assert!(e.starts_with("configuration: embedding.mode: unknown value \"sometimes\""), "{e}");
        assert!(e.contains("`background`, `inline`"), "{e}");
        // Checked on every backend now, not only when Postgres is selected.
        let e = err(jail, "MEMLAYER_SEARCH__PGVECTOR__METRIC", "manhattan", "l2");
        assert!(e.contains("search.pgvector.metric") && e.contains("`cosine`, `l2`, `ip`"), "{e}");
        let e = err(jail, "MEMLAYER_LOG__FORMAT", "xml", "json");
        assert!(e.contains("log.format") && e.contains("`text`, `json`"), "{e}");
        let c = load(jail, None).map_err(|e| e.to_string())?;
        assert_eq!(c.embedding.mode, memlayer_app::EmbeddingMode::Inline);
        assert_eq!(c.search.pgvector.metric, memlayer_app::DistanceMetric::L2);
        Ok(())
    });
}

#[test]
fn an_unset_index_is_the_backends_own_and_hnsw_on_postgres_is_refused() {
    use memlayer_app::{BackendKind, DatabaseTarget, IndexKind};
    figment::Jail::expect_with(|jail| {
        let c = load(jail, None).map_err(|e| e.to_string())?;
        assert_eq!((c.search.index, c.index_kind()), (None, IndexKind::Hnsw));
        assert_eq!(c.database_target().unwrap(), DatabaseTarget::File(c.data_dir.join("memlayer.db")));
        jail.set_env("DATABASE_URL", "postgres://app@h/mem");
        let c = load(jail, None).map_err(|e| e.to_string())?;
        assert_eq!(
            (c.index_kind(), c.database_target().unwrap().backend()),
            (IndexKind::Pgvector, BackendKind::Postgres)
        );
        jail.set_env("MEMLAYER_SEARCH__INDEX", "hnsw");
        let e = load(jail, None).unwrap_err().to_string();
        assert!(e.contains("search.index") && e.contains("pgvector"), "an error, not an alias: {e}");
        jail.set_env("MEMLAYER_SEARCH__INDEX", "exact");
        assert_eq!(load(jail, None).map_err(|e| e.to_string())?.index_kind(), IndexKind::Exact);
        for (url, target) in [
            (":memory:", DatabaseTarget::Memory),
            ("file:/tmp/x.db", DatabaseTarget::File("/tmp/x.db".into())),
            ("/tmp/y.db", DatabaseTarget::File("/tmp/y.db".into())),
            ("libsql://db.example", DatabaseTarget::RemoteLibsql("libsql://db.example".into())),
            ("postgresql://h/db", DatabaseTarget::Postgres("postgresql://h/db".into())),
        ] {
            let c = Config {
                database: memlayer_app::DatabaseConfig { url: Some(url.into()), ..Default::default() },
                ..Default::default()
            };
            assert_eq!(c.database_target().unwrap(), target, "{url}");
        }
        Ok(())
    });
}

#[test]
fn storage_quotas_are_unlimited_unless_configured() {
    figment::Jail::expect_with(|jail| {
        let c = load(jail, None).map_err(|e| e.to_string())?;
        assert_eq!(c.limits.quota, memlayer_domain::Quota::UNLIMITED);
        jail.set_env("MEMLAYER_LIMITS__QUOTA__MESSAGES", "100000");
        jail.set_env("MEMLAYER_LIMITS__QUOTA__BYTES", "1000000000");
        let c = load(jail, None).map_err(|e| e.to_string())?;
        assert_eq!(
            c.limits.quota,
            memlayer_domain::Quota { threads: None, messages: Some(100_000), bytes: Some(1_000_000_000) }
        );
        jail.set_env("MEMLAYER_LIMITS__QUOTA__THREAD", "5");
        let err = load(jail, None).unwrap_err().to_string();
        assert!(err.contains("THREAD"), "a misspelt quota is named: {err}");
        Ok(())
    });
}

/// `database.synchronous`: `full` unless set, `normal` on an embedded file,
/// refused for a database whose server keeps its own durability.
#[test]
fn synchronous_is_full_unless_set_and_only_for_embedded_files() {
    use memlayer_app::Synchronous;
    figment::Jail::expect_with(|jail| {
        assert_eq!(load(jail, None).map_err(|e| e.to_string())?.database.synchronous, Synchronous::Full);
        jail.set_env("MEMLAYER_DATABASE__SYNCHRONOUS", "normal");
        assert_eq!(load(jail, None).map_err(|e| e.to_string())?.database.synchronous, Synchronous::Normal);
        jail.set_env("MEMLAYER_DATABASE__SYNCHRONOUS", "off");
        let e = load(jail, None).unwrap_err().to_string();
        assert!(e.contains("database.synchronous") && e.contains("`full`, `normal`"), "{e}");
        jail.set_env("MEMLAYER_DATABASE__SYNCHRONOUS", "normal");
        for url in ["postgres://app@h/mem", "libsql://db.example"] {
            jail.set_env("MEMLAYER_DATABASE__URL", url);
            let e = load(jail, None).unwrap_err().to_string();
            assert!(e.contains("database.synchronous"), "{url}: {e}");
        }
        Ok(())
    });
}

/// `database.commit_delay_ms`: 0 unless set; above 0 only on an embedded
/// file with `synchronous = "normal"`, and at most 1,000.
#[test]
fn commit_delay_needs_an_embedded_file_with_normal() {
    figment::Jail::expect_with(|jail| {
        assert_eq!(load(jail, None).map_err(|e| e.to_string())?.database.commit_delay_ms, 0);
        jail.set_env("MEMLAYER_DATABASE__COMMIT_DELAY_MS", "10");
        let e = load(jail, None).unwrap_err().to_string();
        assert!(e.contains("database.commit_delay_ms") && e.contains("normal"), "{e}");
        jail.set_env("MEMLAYER_DATABASE__SYNCHRONOUS", "normal");
        assert_eq!(load(jail, None).map_err(|e| e.to_string())?.database.commit_delay_ms, 10);
        jail.set_env("MEMLAYER_DATABASE__COMMIT_DELAY_MS", "1001");
        let e = load(jail, None).unwrap_err().to_string();
        assert!(e.contains("database.commit_delay_ms") && e.contains("1000"), "{e}");
        jail.set_env("MEMLAYER_DATABASE__COMMIT_DELAY_MS", "10");
        for url in [":memory:", "postgres://app@h/mem", "libsql://db.example"] {
            jail.set_env("MEMLAYER_DATABASE__URL", url);
            let e = load(jail, None).unwrap_err().to_string();
            assert!(e.contains("database.commit_delay_ms") || e.contains("database.synchronous"), "{url}: {e}");
        }
        Ok(())
    });
}
