"""Entry point: imports every command module so that each registers itself on `app`."""

from sgproject.app import app

# Each import registers commands on `app` (order is the order in --help).
from sgproject import cmd_generate  # noqa: F401,E402
from sgproject import cmd_train  # noqa: F401,E402
from sgproject import cmd_invert  # noqa: F401,E402
from sgproject import cmd_train_encoder  # noqa: F401,E402
from sgproject import cmd_detect  # noqa: F401,E402
from sgproject import cmd_dataset  # noqa: F401,E402
from sgproject import cmd_align  # noqa: F401,E402
from sgproject import cmd_convert  # noqa: F401,E402
from sgproject import cmd_metrics  # noqa: F401,E402
from sgproject import cmd_report  # noqa: F401,E402
from sgproject import cmd_calibrate  # noqa: F401,E402


def main() -> None:
    app()
