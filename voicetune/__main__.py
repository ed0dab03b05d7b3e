from voicetune.cli import main

raise SystemExit(main())
