from denoise.cli import main

raise SystemExit(main())
