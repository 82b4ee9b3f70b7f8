"""Deploying a trained model on a bench server and comparing what the camera sees with the twin.

``encode`` turns digits into input-SLM maps, ``regions`` puts the detector regions on
the camera, ``checks`` decides whether a model fits a bench, ``records`` owns a run
folder, ``runner`` drives the bench server, ``report`` writes the comparison.
"""
