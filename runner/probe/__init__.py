"""`python -m runner lb-probe --cluster NAME`: the seed's curl experiment against a real cluster's LB.

ladder.py: the idle periods and their ports (pure); fates.py: each connection's fate from both ends'
evidence, per path the idle window where it broke and the profiles that fit (pure); manifests.py:
the probe's objects; kube.py: deploy, run the clients, collect, tear down; command.py: the command.
"""
