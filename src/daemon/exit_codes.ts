/** Process exit codes (docs/reference.md, "Exit codes"). */
export const ExitCode = {
  /** Clean stop. */
  ok: 0,
  /** Runtime failure. */
  runtime: 1,
  /** Bad rule file or usage. */
  usage: 2,
  /** A listener could not be bound. */
  bind: 3,
  /** `export --skip-unsupported` wrote the rules a router can do and left others out. */
  partial: 4,
} as const;
