"""Operations: processes, serving, the tracking server, auth rules, acceptance checks."""
