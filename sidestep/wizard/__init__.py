"""The guided wizard (`python train.py` with no arguments); see `sidestep.wizard.app`."""


def run_wizard(plain: bool = False) -> int:
    from sidestep.wizard.app import run_wizard as run

    return run(plain=plain)
