use super::*;

fn cli(args: &[&str]) -> Cli {
    let mut argv = vec!["oxvirt"];
    argv.extend_from_slice(args);
    match parse(argv) {
        Ok(cli) => cli,
        Err(outcome) => panic!("{args:?} refused: {outcome:?}"),
    }
}

fn refused(args: &[&str]) -> ParseOutcome {
    let mut argv = vec!["oxvirt"];
    argv.extend_from_slice(args);
    parse(argv).expect_err("accepted")
}

#[test]
fn connect_uri_before_the_command() {
    // Act
    let parsed = cli(&["-c", "oxvirt+unix:///system?socket=/tmp/s", "list", "--all"]);

    // Assert
    assert_eq!(
        parsed.connect.as_deref(),
        Some("oxvirt+unix:///system?socket=/tmp/s")
    );
    let Command::List(list) = parsed.command else {
        panic!("not list")
    };
    assert!(list.all);
    assert_eq!(list.flags(), list_flags::ACTIVE | list_flags::INACTIVE);
}

#[test]
fn list_flags_follow_virsh() {
    // Arrange
    let flags = |args: &[&str]| {
        let mut full = vec!["list"];
        full.extend_from_slice(args);
        match cli(&full).command {
            Command::List(l) => l.flags(),
            other => panic!("{other:?}"),
        }
    };

    // Assert: the values virsh's cmdList computes.
    assert_eq!(flags(&[]), 1);
    assert_eq!(flags(&["--inactive"]), 2);
    assert_eq!(flags(&["--state-shutoff"]), 2 | 64);
    assert_eq!(
        flags(&["--all", "--state-running", "--state-paused"]),
        3 | 16 | 32
    );
    assert_eq!(flags(&["--all", "--persistent"]), 3 | 4);
    assert_eq!(flags(&["--transient"]), 1 | 8);
    assert_eq!(flags(&["--autostart", "--all"]), 3 | 1024);
    assert_eq!(flags(&["--no-autostart"]), 1 | 2048);
}

#[test]
fn table_excludes_name_uuid_and_id() {
    // Arrange
    let Command::List(list) = cli(&["list", "--table", "--name"]).command else {
        panic!("not list")
    };

    // Act / Assert
    assert_eq!(list.check(), Err(ArgError::Exclusive("table", "name")));
}

#[test]
fn domain_may_be_positional_or_named_and_options_may_follow_it() {
    // Act
    let positional = cli(&["domstate", "test", "--reason"]).command;
    let named = cli(&["domstate", "--domain", "test"]).command;

    // Assert
    let Command::Domstate { domain, reason } = positional else {
        panic!("not domstate")
    };
    assert_eq!(domain.resolve("domstate", "domain"), Ok("test"));
    assert!(reason);
    let Command::Domstate { domain, reason } = named else {
        panic!("not domstate")
    };
    assert_eq!(domain.resolve("domstate", "domain"), Ok("test"));
    assert!(!reason);
}

#[test]
fn missing_domain_reads_like_virsh() {
    // Arrange
    let Command::Dominfo { domain } = cli(&["dominfo"]).command else {
        panic!("not dominfo")
    };

    // Act
    let err = domain.resolve("dominfo", "domain").unwrap_err();

    // Assert
    assert_eq!(
        err.to_string(),
        "command 'dominfo' requires <domain> option"
    );
}

#[test]
fn domain_given_twice_is_refused() {
    // Arrange
    let Command::Start { domain, .. } = cli(&["start", "a", "--domain", "b"]).command else {
        panic!("not start")
    };

    // Act / Assert
    assert_eq!(
        domain.resolve("start", "domain"),
        Err(ArgError::Duplicate { option: "domain" })
    );
}

#[test]
fn define_takes_a_file_positionally_or_named() {
    // Act
    let Command::Define { file, .. } = cli(&["define", "d.xml"]).command else {
        panic!("not define")
    };
    let Command::Create {
        file: named,
        paused,
        ..
    } = cli(&["create", "--file", "c.xml", "--paused"]).command
    else {
        panic!("not create")
    };

    // Assert
    assert_eq!(file.resolve("define"), Ok("d.xml"));
    assert_eq!(named.resolve("create"), Ok("c.xml"));
    assert!(paused);
    assert_eq!(
        FileArg::default()
            .resolve("define")
            .unwrap_err()
            .to_string(),
        "command 'define' requires <file> option"
    );
}

#[test]
fn unknown_command_and_option_read_like_virsh() {
    // Assert: virsh's own messages for the same mistakes.
    assert_eq!(
        refused(&["bogus"]),
        ParseOutcome::Fail(vec!["unknown command: 'bogus'".into()])
    );
    assert_eq!(
        refused(&["list", "--bogus"]),
        ParseOutcome::Fail(vec!["command 'list' doesn't support option --bogus".into()])
    );
    assert_eq!(
        refused(&["-c", "test:///default", "dominfo", "a", "b"]),
        ParseOutcome::Fail(vec!["unexpected data 'b'".into()])
    );
}

#[test]
fn help_is_printed_not_failed() {
    // Act
    let top = refused(&["help"]);
    let sub = refused(&["help", "list"]);
    let none = refused(&[]);

    // Assert
    let ParseOutcome::Print(top) = top else {
        panic!("help failed")
    };
    assert!(top.contains("dominfo"), "{top}");
    assert!(top.contains("domain information"), "{top}");
    let ParseOutcome::Print(sub) = sub else {
        panic!("help list failed")
    };
    assert!(sub.contains("--state-running"), "{sub}");
    assert!(matches!(none, ParseOutcome::Print(_)));
}

#[test]
fn domstats_groups_flags_and_domains() {
    // Act
    let Command::Domstats(args) = cli(&[
        "domstats",
        "--state",
        "--cpu-total",
        "--balloon",
        "--vcpu",
        "--block",
        "--interface",
        "--list-running",
        "a",
        "b",
        "--domain",
        "c",
    ])
    .command
    else {
        panic!("not domstats")
    };

    // Assert
    assert_eq!(args.stats(), 1 | 2 | 4 | 8 | 16 | 32);
    assert_eq!(args.flags(), 16);
    assert_eq!(args.all_domains(), ["a", "b", "c"]);
    assert_eq!(DomstatsArgs::default().stats(), 0);
}

#[test]
fn event_arguments_follow_virsh_rules() {
    // Arrange
    let event = |args: &[&str]| {
        let mut full = vec!["event"];
        full.extend_from_slice(args);
        match cli(&full).command {
            Command::Event(e) => e,
            other => panic!("{other:?}"),
        }
    };

    // Act / Assert
    assert_eq!(
        event(&["--loop", "--event", "lifecycle", "--timeout", "3"]).check(),
        Ok(Some(3))
    );
    assert_eq!(event(&["--all"]).check(), Ok(None));
    assert_eq!(
        event(&["--loop"]).check().unwrap_err().to_string(),
        "one of --list, --all, or --event <type> is required"
    );
    assert_eq!(
        event(&["--all", "--event", "reboot"]).check(),
        Err(ArgError::Exclusive("all", "event"))
    );
    assert_eq!(
        event(&["--event", "bogus"])
            .check()
            .unwrap_err()
            .to_string(),
        "unknown event type bogus"
    );
    assert_eq!(
        event(&["--all", "--timeout", "0"])
            .check()
            .unwrap_err()
            .to_string(),
        "Numeric value '0' for <timeout> option is malformed or out of range"
    );
    assert!(event(&["--all", "--timeout", "x"]).check().is_err());
    assert_eq!(
        event(&["--domain", "d", "--all"]).domain.as_deref(),
        Some("d")
    );
}

#[test]
fn shutdown_modes_become_flags() {
    // Arrange
    let Command::Shutdown { mode, .. } = cli(&["shutdown", "d", "--mode", "acpi,agent"]).command
    else {
        panic!("not shutdown")
    };
    let bad = ModeArg {
        mode: Some("bogus".into()),
    };

    // Act / Assert
    assert_eq!(mode.flags(), Ok(3));
    assert_eq!(ModeArg::default().flags(), Ok(0));
    assert!(bad.flags().is_err());
}

#[test]
fn uri_choice_follows_virsh() {
    assert_eq!(
        choose_uri(Some("qemu:///system"), Some("x:///y")),
        "qemu:///system"
    );
    assert_eq!(choose_uri(None, Some("x:///y")), "x:///y");
    assert_eq!(choose_uri(None, Some("")), DEFAULT_URI);
    assert_eq!(choose_uri(None, None), "oxvirt:///system");
}

#[test]
fn every_command_parses_and_names_itself() {
    // Arrange: one invocation per command.
    let cases: &[&[&str]] = &[
        &["list"],
        &["define", "f"],
        &["undefine", "d", "--nvram"],
        &["create", "f"],
        &["start", "d"],
        &["shutdown", "d"],
        &["destroy", "d", "--graceful"],
        &["reboot", "d"],
        &["reset", "d"],
        &["suspend", "d"],
        &["resume", "d"],
        &["autostart", "--disable", "d"],
        &["dominfo", "d"],
        &["domstate", "d"],
        &["domid", "d"],
        &["domname", "1"],
        &["domuuid", "d"],
        &["dumpxml", "d", "--inactive"],
        &["domstats"],
        &["vcpuinfo", "d"],
        &["domblklist", "d", "--details"],
        &["domiflist", "d"],
        &["domblkstat", "d", "vda", "--human"],
        &["domifstat", "d", "vnet0"],
        &["dommemstat", "d"],
        &["console", "d"],
        &["event", "--all"],
        &["uri"],
        &["version"],
        &["hostname"],
        &["nodeinfo"],
    ];

    for case in cases {
        // Act
        let parsed = cli(case);

        // Assert
        assert_eq!(parsed.command.name(), case[0]);
    }
}
