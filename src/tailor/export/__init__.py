"""tailor.export"""
