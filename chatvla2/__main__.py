from chatvla2.cli import main

raise SystemExit(main())
