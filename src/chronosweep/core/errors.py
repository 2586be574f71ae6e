"""Errors that mean the user's input is wrong: printed without a traceback, exit status 2."""


class UserError(Exception):
    pass
