"""Library chatter stays off the screen: LyCORIS's INFO lines go to sidestep.log only, its warnings still show."""

import logging

from sidestep.logs import log, quiet_libraries


class _Keep(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record.getMessage())


def test_lycoris_info_goes_to_the_log_file_not_the_screen():
    quiet_libraries()
    import lycoris  # noqa: F401  (importing it sets its logger back to INFO, after quiet_libraries ran)

    screen, log_file = _Keep(), _Keep()
    lycoris_logger = logging.getLogger("LyCORIS")
    lycoris_logger.addHandler(screen)
    log.addHandler(log_file)
    try:
        lycoris_logger.info("Create LyCORIS Module")
        lycoris_logger.warning("something to see")
    finally:
        lycoris_logger.removeHandler(screen)
        log.removeHandler(log_file)
    assert screen.records == ["something to see"]
    assert "Create LyCORIS Module" in log_file.records
