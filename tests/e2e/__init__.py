"""Browser tests' machinery: the console process, Debian's chromium through playwright, and one page
object per console page (:mod:`tests.e2e.console`). The tests themselves live in
``tests/integration/test_console_browser.py`` so that they share the integration session's stack and
its trained model; screenshots go to ``tests/e2e/artifacts/`` (git-ignored) and
``python -m tests.e2e.screenshots`` copies the chosen ones to ``docs/console/``."""
