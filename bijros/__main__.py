from bijros.cli import main

raise SystemExit(main())
