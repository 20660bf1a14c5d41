"""`python -m hms_jobs.cli`: the `hms` command without its installed script."""

from hms_jobs.cli import main

if __name__ == "__main__":
    main()
