from ml.cli import main

raise SystemExit(main())
