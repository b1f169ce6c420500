from irs.cli import main

raise SystemExit(main())
