//! The configuration's tests: defaults, layering, every check naming its setting.

use super::*;
use figment::Jail;
use secrecy::ExposeSecret;

#[test]
fn defaults_serve_a_laptop() {
    let config = Config::try_from(RawConfig::default()).expect("defaults are valid");
    assert_eq!(config.http.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(config.profile, Profile::Dev);
    assert_eq!(config.log.format, LogFormat::Text);
    assert!(matches!(
        config.storage,
        StorageConfig::Sqlite(SqliteConfig { ref path, .. }) if path == Path::new("./data/traffic-manager.db")
    ));
    assert_eq!(config.http.body_limit_bytes, 65536);
}

#[test]
fn environment_overrides_file_overrides_defaults() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "tm.toml",
            "listen = \"127.0.0.1:9000\"\nlog_level = \"debug\"\ndb_pool_max = 4",
        )?;
        jail.set_env("TM_LISTEN", "127.0.0.1:9100");
        jail.set_env("TM_DB_STATEMENT_TIMEOUT", "750ms");
        jail.set_env("TM_DATABASE_URL", "postgres://tm:hunter2@127.0.0.1:5432/tm");
        let config = Config::load(Some(Path::new("tm.toml"))).expect("valid");
        assert_eq!(config.http.listen.to_string(), "127.0.0.1:9100");
        assert_eq!(config.log.level, "debug");
        assert_eq!(config.pool.max_connections, 4);
        let StorageConfig::Postgres(PostgresConfig {
            statement_timeout, ..
        }) = config.storage
        else {
            panic!("postgres expected");
        };
        assert_eq!(statement_timeout, Duration::from_millis(750));
        Ok(())
    });
}

#[test]
fn replicas_need_postgresql_and_valid_urls() {
    let with = |primary: Option<&str>, replicas: &str| {
        Config::try_from(RawConfig {
            storage: StorageRaw {
                database_url: primary.map(str::to_owned),
                database_replica_urls: Some(replicas.into()),
                ..Default::default()
            },
            ..RawConfig::default()
        })
    };
    let config = with(
        Some("postgres://u@db1/app"),
        "postgres://u@db2/app, postgres://u@db3/app",
    )
    .expect("valid");
    assert!(matches!(config.storage,
        StorageConfig::Postgres(PostgresConfig { ref replicas, .. }) if replicas.len() == 2));
    for (primary, replicas) in [
        (None, "postgres://u@db2/app"),
        (Some("postgres://u@db1/app"), "mysql://db2"),
        (Some("postgres://u@db1/app"), "postgres://"),
    ] {
        let err = with(primary, replicas).expect_err("invalid");
        assert_eq!(
            err.0[0].setting, "TM_DATABASE_REPLICA_URLS",
            "{primary:?} {replicas}"
        );
    }
}

#[test]
fn redis_is_one_server_or_a_cluster() {
    let config = Config::try_from(RawConfig {
        redis: RedisRaw {
            redis_cluster_urls: Some("redis://127.0.0.1:7000, redis://127.0.0.1:7001".into()),
            ..Default::default()
        },
        ..RawConfig::default()
    })
    .expect("valid");
    let redis = config.redis.expect("configured");
    assert!(matches!(redis.nodes, RedisNodes::Cluster(ref urls) if urls.len() == 2));
    assert!(Config::try_from(RawConfig::default())
        .expect("valid")
        .redis
        .is_none());
    for (raw, setting) in [
        (
            RawConfig {
                redis: RedisRaw {
                    redis_url: Some("redis://127.0.0.1:6379".into()),
                    redis_cluster_urls: Some("redis://127.0.0.1:7000".into()),
                    ..Default::default()
                },
                ..RawConfig::default()
            },
            "TM_REDIS_CLUSTER_URLS",
        ),
        (
            RawConfig {
                redis: RedisRaw {
                    redis_url: Some("http://127.0.0.1:6379".into()),
                    ..Default::default()
                },
                ..RawConfig::default()
            },
            "TM_REDIS_URL",
        ),
        (
            RawConfig {
                redis: RedisRaw {
                    redis_url: Some("redis://127.0.0.1".into()),
                    redis_timeout: Duration::ZERO,
                    ..Default::default()
                },
                ..RawConfig::default()
            },
            "TM_REDIS_TIMEOUT",
        ),
    ] {
        let err = Config::try_from(raw).expect_err("invalid");
        assert_eq!(err.0[0].setting, setting);
    }
}

#[test]
fn transaction_pooling_needs_a_direct_url_and_turns_the_statement_cache_off() {
    let pooled = |direct: Option<&str>| RawConfig {
        storage: StorageRaw {
            database_url: Some("postgres://tm@127.0.0.1:6432/tm".into()),
            db_transaction_pooling: true,
            database_direct_url: direct.map(str::to_owned),
            ..Default::default()
        },
        ..RawConfig::default()
    };
    let err = Config::try_from(pooled(None)).expect_err("invalid");
    assert_eq!(err.0[0].setting, "TM_DATABASE_DIRECT_URL");
    let config = Config::try_from(pooled(Some("postgres://tm@127.0.0.1:5432/tm"))).expect("valid");
    assert!(matches!(
        config.storage,
        StorageConfig::Postgres(PostgresConfig {
            transaction_pooling: true,
            statement_cache: false,
            direct_url: Some(_),
            ..
        })
    ));
    let on_sqlite = RawConfig {
        storage: StorageRaw {
            db_transaction_pooling: true,
            ..Default::default()
        },
        ..RawConfig::default()
    };
    let err = Config::try_from(on_sqlite).expect_err("invalid");
    assert_eq!(err.0[0].setting, "TM_DB_TRANSACTION_POOLING");
}

#[test]
fn each_process_type_has_its_pool_size() {
    let raw = |process_type: &str| RawConfig {
        process: ProcessRaw {
            process_type: process_type.into(),
            ..Default::default()
        },
        pool: PoolRaw {
            db_pool_max: 10,
            db_pool_max_worker: Some(3),
            ..Default::default()
        },
        ..RawConfig::default()
    };
    let web = Config::try_from(raw("web")).expect("valid");
    assert_eq!(
        (web.process_type, web.pool.max_connections),
        (ProcessType::Web, 10)
    );
    let worker = Config::try_from(raw("worker")).expect("valid");
    assert_eq!(
        (worker.process_type, worker.pool.max_connections),
        (ProcessType::Worker, 3)
    );
    let err = Config::try_from(raw("cron")).expect_err("invalid");
    assert_eq!(err.0[0].setting, "TM_PROCESS_TYPE");
}

#[test]
fn every_bad_setting_is_named() {
    let raw = RawConfig {
        process: ProcessRaw {
            profile: "production".into(),
            listen: "localhost".into(),
            ..Default::default()
        },
        storage: StorageRaw {
            database_url: Some("mysql://x".into()),
            ..Default::default()
        },
        pool: PoolRaw {
            db_pool_max: 2,
            db_pool_min: 5,
            ..Default::default()
        },
        http: HttpRaw {
            body_limit_bytes: 1,
            ..Default::default()
        },
        ..RawConfig::default()
    };
    let err = Config::try_from(raw).expect_err("invalid");
    let named: Vec<&str> = err.0.iter().map(|e| e.setting.as_str()).collect();
    assert_eq!(
        named,
        [
            "TM_PROFILE",
            "TM_LISTEN",
            "TM_DATABASE_URL",
            "TM_DB_POOL_MIN",
            "TM_BODY_LIMIT_BYTES"
        ]
    );
}

#[test]
fn type_errors_from_the_environment_name_the_variable() {
    Jail::expect_with(|jail| {
        jail.set_env("TM_DB_POOL_MAX", "many");
        let err = Config::load(None).expect_err("invalid");
        assert_eq!(err.0[0].setting, "TM_DB_POOL_MAX");
        Ok(())
    });
}

#[test]
fn unknown_keys_in_the_file_are_refused() {
    Jail::expect_with(|jail| {
        jail.create_file("tm.toml", "lissten = \"127.0.0.1:1\"")?;
        assert!(Config::load(Some(Path::new("tm.toml"))).is_err());
        Ok(())
    });
}

#[test]
fn a_missing_config_file_is_an_error() {
    let err = Config::load(Some(Path::new("/nonexistent/tm.toml"))).expect_err("missing");
    assert_eq!(err.0[0].setting, "TM_CONFIG");
}

#[test]
fn secrets_are_redacted() {
    let raw = RawConfig {
        storage: StorageRaw {
            database_url: Some("postgres://tm:hunter2@db.internal:5432/tm".into()),
            ..Default::default()
        },
        ..RawConfig::default()
    };
    let shown = Config::try_from(raw).expect("valid").redacted();
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(
        shown.contains("postgres://tm:***@db.internal:5432/tm"),
        "{shown}"
    );
}

#[test]
fn check_config_shows_the_guards() {
    let shown = Config::try_from(RawConfig::default())
        .expect("valid")
        .redacted();
    for line in [
        "breaker_open_for = \"5s\"",
        "read_cache_entries = 10000",
        "read_cache_bytes = 67108864",
    ] {
        assert!(shown.lines().any(|l| l == line), "{line} missing:\n{shown}");
    }
}

#[test]
fn a_short_bootstrap_key_is_refused() {
    let raw = RawConfig {
        process: ProcessRaw {
            bootstrap_admin_key: Some("too-short".into()),
            ..Default::default()
        },
        ..RawConfig::default()
    };
    let err = Config::try_from(raw).expect_err("invalid");
    assert_eq!(err.0[0].setting, "TM_BOOTSTRAP_ADMIN_KEY");
    assert!(
        !err.to_string().contains("too-short"),
        "the key itself is never echoed"
    );
    let raw = RawConfig {
        process: ProcessRaw {
            bootstrap_admin_key: Some("k".repeat(32)),
            ..Default::default()
        },
        ..RawConfig::default()
    };
    let shown = Config::try_from(raw).expect("valid").redacted();
    assert!(!shown.contains(&"k".repeat(32)));
}

#[test]
fn cors_wildcard_is_refused_in_prod_only() {
    let raw = |profile: &str| RawConfig {
        process: ProcessRaw {
            profile: profile.into(),
            ..Default::default()
        },
        http: HttpRaw {
            cors_origins: Some("*".into()),
            ..Default::default()
        },
        ..RawConfig::default()
    };
    assert_eq!(
        Config::try_from(raw("dev")).expect("valid").http.cors,
        CorsOrigins::Any
    );
    let err = Config::try_from(raw("prod")).expect_err("refused");
    assert_eq!(err.0[0].setting, "TM_CORS_ORIGINS");
}

#[test]
fn cors_origins_must_be_origins() {
    let raw = RawConfig {
        http: HttpRaw {
            cors_origins: Some("https://console.example.com, http://localhost:3000".into()),
            ..Default::default()
        },
        ..RawConfig::default()
    };
    assert_eq!(
        Config::try_from(raw).expect("valid").http.cors,
        CorsOrigins::List(vec![
            "https://console.example.com".into(),
            "http://localhost:3000".into()
        ])
    );
    for bad in [
        "console.example.com",
        "https://x.example/path",
        "ftp://x.example",
        "https://x.example/",
    ] {
        let raw = RawConfig {
            http: HttpRaw {
                cors_origins: Some(bad.into()),
                ..Default::default()
            },
            ..RawConfig::default()
        };
        assert!(Config::try_from(raw).is_err(), "{bad}");
    }
}

#[test]
fn rate_limits_are_parsed_and_checked() {
    let raw = RawConfig {
        limits: LimitsRaw {
            rate_limit_write: "10/min".into(),
            rate_limit_exempt: "127.0.0.1, 10.0.0.0/8".into(),
            ..Default::default()
        },
        ..RawConfig::default()
    };
    let config = Config::try_from(raw).expect("valid");
    assert_eq!(config.http.rate_limits.write.to_string(), "10/min");
    assert_eq!(config.http.rate_limits.exempt_networks.len(), 2);
    // Tenant budgets are ten keys' worth by default, resolve's at least 200000/s.
    let limits = &config.http.rate_limits;
    assert_eq!(limits.tenant_resolve.to_string(), "200000/s");
    assert_eq!(limits.tenant_read.count.get(), 10 * limits.read.count.get());
    assert_eq!(limits.tenant_keys.count.get(), 10 * limits.keys.count.get());
    assert_eq!(limits.max_keys_per_tenant.get(), 1000);
    let raw = RawConfig {
        limits: LimitsRaw {
            rate_limit_read: "lots".into(),
            rate_limit_tenant_write: "5/fortnight".into(),
            rate_limit_exempt: "nobody".into(),
            max_keys_per_tenant: 0,
            ..Default::default()
        },
        ..RawConfig::default()
    };
    let named: Vec<String> = Config::try_from(raw)
        .expect_err("invalid")
        .0
        .into_iter()
        .map(|e| e.setting)
        .collect();
    assert_eq!(
        named,
        [
            "TM_RATE_LIMIT_READ",
            "TM_RATE_LIMIT_TENANT_WRITE",
            "TM_RATE_LIMIT_EXEMPT",
            "TM_MAX_KEYS_PER_TENANT"
        ]
    );
}

#[test]
fn non_dev_profiles_log_json_by_default() {
    let raw = RawConfig {
        process: ProcessRaw {
            profile: "prod".into(),
            ..Default::default()
        },
        ..RawConfig::default()
    };
    assert_eq!(
        Config::try_from(raw).expect("valid").log.format,
        LogFormat::Json
    );
}

#[test]
fn every_setting_may_come_from_the_environment() {
    // 111 TM_* settings and the 10 standard OTEL_* ones.
    assert_eq!(setting_keys().len(), 121);
    Jail::expect_with(|jail| {
        jail.set_env("TM_ACCESS_LOG_RESOLVE_SAMPLE", "0");
        jail.set_env("TM_RESOLVE_FAST_PATH", "false");
        jail.set_env("TM_PROCESS_TYPE", "worker");
        jail.set_env("TM_DB_POOL_MAX_WORKER", "3");
        jail.set_env("TM_READ_CACHE_ENTRIES", "7");
        jail.set_env("TM_READ_CACHE_BYTES", "1048576");
        jail.set_env("TM_RATE_LIMIT_KEYS", "9/min");
        jail.set_env("TM_RATE_LIMIT_TENANT_KEYS", "90/min");
        jail.set_env("TM_MAX_KEYS_PER_TENANT", "12");
        jail.set_env("TM_HEALTH_CHECK_INTERVAL", "250ms");
        jail.set_env("TM_IDEMPOTENCY_MAX_KEYS", "12");
        jail.set_env("TM_EVENTS_RETENTION", "36h");
        jail.set_env("TM_JOBS_IN_SERVE", "false");
        jail.set_env("TM_JOB_BACKOFF_MAX", "90s");
        jail.set_env("TM_BACKUP_TARGET", "s3://backups/registry");
        jail.set_env("TM_BACKUP_INTERVAL", "0s");
        jail.set_env("TM_BACKUP_KEEP_MONTHLY", "24");
        let config = Config::load(None).expect("valid");
        assert_eq!(config.pool.max_connections, 3);
        assert_eq!(config.http.guards.read_cache_entries, 7);
        assert_eq!(config.http.guards.read_cache_bytes, 1_048_576);
        assert_eq!(config.http.rate_limits.keys.to_string(), "9/min");
        assert_eq!(config.http.access_log.resolve_sample, 0);
        assert!(!config.http.resolve_fast_path);
        assert_eq!(config.http.rate_limits.tenant_keys.to_string(), "90/min");
        assert_eq!(config.http.rate_limits.max_keys_per_tenant.get(), 12);
        assert_eq!(
            config.http.health_check_interval,
            Duration::from_millis(250)
        );
        assert_eq!(config.http.idempotency_max_keys, 12);
        assert_eq!(config.events.retention, Duration::from_secs(36 * 3600));
        assert!(!config.jobs.in_serve);
        assert_eq!(config.jobs.backoff_max, Duration::from_secs(90));
        assert_eq!(config.backup.target, "s3://backups/registry");
        assert_eq!(config.backup.interval, None);
        assert_eq!(config.backup.retention.monthly, 24);
        assert_eq!(config.backup.retention.daily, 7);
        Ok(())
    });
}

#[test]
fn health_check_interval_and_idempotency_bound_are_checked() {
    for (interval, max_keys, bad) in [
        (Duration::ZERO, 1, "TM_HEALTH_CHECK_INTERVAL"),
        (Duration::from_secs(61), 1, "TM_HEALTH_CHECK_INTERVAL"),
        (Duration::from_secs(1), 0, "TM_IDEMPOTENCY_MAX_KEYS"),
    ] {
        let raw = RawConfig {
            http: HttpRaw {
                health_check_interval: interval,
                idempotency_max_keys: max_keys,
                ..Default::default()
            },
            ..RawConfig::default()
        };
        let err = Config::try_from(raw).expect_err("refused");
        assert_eq!(err.0[0].setting, bad);
    }
}

#[test]
fn an_unknown_key_in_the_file_is_named() {
    Jail::expect_with(|jail| {
        jail.create_file(
            "tm.toml",
            "listen = \"127.0.0.1:1\"\nlissten = \"127.0.0.1:1\"",
        )?;
        let err = Config::load(Some(Path::new("tm.toml"))).expect_err("refused");
        assert_eq!(err.0.len(), 1);
        assert_eq!(err.0[0].setting, "TM_LISSTEN");
        assert!(err.0[0].message.contains("tm.toml"), "{err}");
        Ok(())
    });
}

#[test]
fn connection_limits_have_production_defaults() {
    let config = Config::try_from(RawConfig::default()).expect("valid");
    let limits = &config.http.connections;
    assert_eq!(limits.header_read_timeout, Duration::from_secs(10));
    assert_eq!(limits.body_read_timeout, Duration::from_secs(10));
    assert_eq!(limits.idle_timeout, Duration::from_secs(60));
    assert_eq!(limits.max_connections, 10_000);
    assert_eq!(limits.http2_max_concurrent_streams, 100);
    assert_eq!(config.http.guards.resolve_max_in_flight, 4096);
}

#[test]
fn connection_limits_come_from_the_environment_and_are_shown() {
    Jail::expect_with(|jail| {
        jail.set_env("TM_HTTP_HEADER_READ_TIMEOUT", "2s");
        jail.set_env("TM_HTTP_BODY_READ_TIMEOUT", "500ms");
        jail.set_env("TM_HTTP_IDLE_TIMEOUT", "1m");
        jail.set_env("TM_HTTP_MAX_CONNECTIONS", "64");
        jail.set_env("TM_HTTP2_MAX_CONCURRENT_STREAMS", "8");
        jail.set_env("TM_HTTP2_MAX_PENDING_ACCEPT_RESET_STREAMS", "5");
        jail.set_env("TM_HTTP2_MAX_LOCAL_ERROR_RESET_STREAMS", "50");
        jail.set_env("TM_RESOLVE_MAX_IN_FLIGHT", "16");
        let config = Config::load(None).expect("valid");
        let limits = &config.http.connections;
        assert_eq!(limits.header_read_timeout, Duration::from_secs(2));
        assert_eq!(limits.body_read_timeout, Duration::from_millis(500));
        assert_eq!(limits.idle_timeout, Duration::from_secs(60));
        assert_eq!(limits.max_connections, 64);
        assert_eq!(limits.http2_max_concurrent_streams, 8);
        assert_eq!(limits.http2_max_pending_accept_reset_streams, 5);
        assert_eq!(limits.http2_max_local_error_reset_streams, 50);
        assert_eq!(config.http.guards.resolve_max_in_flight, 16);
        let shown = config.redacted();
        for line in [
            "http_body_read_timeout = \"500ms\"",
            "http_idle_timeout = \"1m\"",
            "http_max_connections = 64",
            "http2_max_local_error_reset_streams = 50",
            "resolve_max_in_flight = 16",
        ] {
            assert!(shown.lines().any(|l| l == line), "{line} in {shown}");
        }
        Ok(())
    });
}

#[test]
fn connection_limits_must_allow_something() {
    let raw = RawConfig {
        guards: GuardConfig {
            resolve_max_in_flight: 0,
            ..GuardConfig::default()
        },
        http: HttpRaw {
            http_header_read_timeout: Duration::ZERO,
            http_max_connections: 0,
            http2_max_concurrent_streams: 0,
            ..HttpRaw::default()
        },
        ..RawConfig::default()
    };
    let named: Vec<String> = Config::try_from(raw)
        .expect_err("invalid")
        .0
        .into_iter()
        .map(|e| e.setting)
        .collect();
    assert_eq!(
        named,
        [
            "TM_RESOLVE_MAX_IN_FLIGHT",
            "TM_HTTP_HEADER_READ_TIMEOUT",
            "TM_HTTP_MAX_CONNECTIONS",
            "TM_HTTP2_MAX_CONCURRENT_STREAMS"
        ]
    );
}

#[test]
fn kafka_is_off_until_brokers_are_named() {
    let config = Config::try_from(RawConfig::default()).expect("valid");
    assert_eq!(config.events.kafka, None);

    let raw = |brokers: &str, topic: &str| RawConfig {
        events: EventsRaw {
            kafka_brokers: Some(brokers.into()),
            kafka_topic: topic.into(),
            ..Default::default()
        },
        ..RawConfig::default()
    };
    let config =
        Config::try_from(raw(" 127.0.0.1:9092, kafka-1:9093 ,", "routes.v1")).expect("valid");
    let kafka = config.events.kafka.expect("kafka");
    assert_eq!(kafka.brokers, ["127.0.0.1:9092", "kafka-1:9093"]);
    assert_eq!(kafka.topic, "routes.v1");
    assert_eq!((kafka.partitions, kafka.replication_factor), (6, 1));

    for (brokers, topic, setting) in [
        ("kafka-1", "events", "TM_KAFKA_BROKERS"),
        ("kafka-1:0", "events", "TM_KAFKA_BROKERS"),
        ("http://kafka-1:9092", "events", "TM_KAFKA_BROKERS"),
        ("kafka-1:9092", "events/all", "TM_KAFKA_TOPIC"),
        ("kafka-1:9092", "", "TM_KAFKA_TOPIC"),
    ] {
        let err = Config::try_from(raw(brokers, topic)).expect_err("invalid");
        assert_eq!(err.0[0].setting, setting, "{brokers} {topic}");
    }
}

#[test]
fn backups_go_to_the_data_dir_daily_unless_told_otherwise() {
    let config = Config::try_from(RawConfig::default()).expect("valid");
    assert_eq!(
        Path::new(&config.backup.target),
        config.data_dir.join("backups")
    );
    assert_eq!(config.backup.interval, Some(Duration::from_secs(24 * 3600)));
    assert_eq!(
        config.backup.retention,
        crate::Retention {
            daily: 7,
            weekly: 4,
            monthly: 12
        }
    );
    for bad in ["s3://", "s3:///prefix", "gs://bucket", "  "] {
        let raw = RawConfig {
            backup: crate::BackupRaw {
                backup_target: Some(bad.into()),
                ..Default::default()
            },
            ..RawConfig::default()
        };
        let err = Config::try_from(raw).expect_err(bad);
        assert_eq!(err.0[0].setting, "TM_BACKUP_TARGET", "{bad}");
    }
    let raw = RawConfig {
        backup: crate::BackupRaw {
            backup_keep_daily: 0,
            backup_keep_weekly: 0,
            backup_keep_monthly: 0,
            ..Default::default()
        },
        ..RawConfig::default()
    };
    assert!(Config::try_from(raw).is_err());
}

#[test]
fn tracing_is_off_unless_an_endpoint_is_set() {
    let config = Config::try_from(RawConfig::default()).expect("defaults are valid");
    assert!(config.tracing.is_none());
    assert!(config.redacted().contains("tracing = \"off"));
}

#[test]
fn tracing_reads_the_standard_variables() {
    Jail::expect_with(|jail| {
        jail.set_env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/");
        jail.set_env(
            "OTEL_EXPORTER_OTLP_HEADERS",
            "authorization=Bearer%20s3cret,x-team=ops",
        );
        jail.set_env(
            "OTEL_RESOURCE_ATTRIBUTES",
            "deployment.environment=prod,service.name=ignored",
        );
        jail.set_env("OTEL_SERVICE_NAME", "tm-eu");
        jail.set_env("OTEL_TRACES_SAMPLER", "parentbased_traceidratio");
        jail.set_env("OTEL_TRACES_SAMPLER_ARG", "0.01");
        let config = Config::load(None).expect("valid");
        let tracing = config.tracing.clone().expect("on");
        assert_eq!(tracing.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(tracing.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(tracing.service_name, "tm-eu");
        assert_eq!(
            tracing.resource_attributes,
            vec![("deployment.environment".to_owned(), "prod".to_owned())]
        );
        assert_eq!(
            tracing.sampler,
            TraceSampler::ParentBased(RootSampler::Ratio(0.01))
        );
        let headers: Vec<(&str, &str)> = tracing
            .headers
            .iter()
            .map(|(name, value)| (name.as_str(), value.expose_secret()))
            .collect();
        assert_eq!(
            headers,
            vec![("authorization", "Bearer s3cret"), ("x-team", "ops")]
        );
        let shown = config.redacted();
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("authorization=(redacted)"), "{shown}");
        assert!(
            shown.contains(
                "otel_exporter_otlp_traces_endpoint = \"http://collector:4318/v1/traces\""
            ),
            "{shown}"
        );

        jail.set_env(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "https://traces.example/otlp",
        );
        let tracing = Config::load(None).expect("valid").tracing.expect("on");
        assert_eq!(tracing.endpoint, "https://traces.example/otlp");
        Ok(())
    });
}

#[test]
fn bad_tracing_settings_are_named_by_their_standard_variable() {
    Jail::expect_with(|jail| {
        jail.set_env("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318");
        jail.set_env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc");
        jail.set_env("OTEL_TRACES_SAMPLER", "traceidratio");
        jail.set_env("OTEL_TRACES_SAMPLER_ARG", "2");
        let err = Config::load(None).expect_err("invalid");
        let named: Vec<&str> = err.0.iter().map(|e| e.setting.as_str()).collect();
        assert_eq!(
            named,
            [
                "OTEL_TRACES_SAMPLER_ARG",
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                "OTEL_EXPORTER_OTLP_ENDPOINT"
            ],
            "{err}"
        );
        Ok(())
    });
}
