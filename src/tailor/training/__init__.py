"""tailor.training"""
