"Packaging for fc_chatglm: every field comes from `settings.ini`, nbdev's single source of project facts."
from configparser import ConfigParser
import ast
from pathlib import Path
import shutil
import setuptools
from setuptools.command.build_py import build_py

cfg = ConfigParser(delimiters=['='])
cfg.read(Path(__file__).parent/'settings.ini', encoding='utf-8')
cfg = cfg['DEFAULT']

licenses = {'apache2': ('Apache Software License 2.0', 'OSI Approved :: Apache Software License')}
statuses = ['1 - Planning', '2 - Pre-Alpha', '3 - Alpha', '4 - Beta', '5 - Production/Stable']
lic = licenses[cfg['license']]
requirements = cfg.get('requirements', '').split()
dev_requirements = cfg.get('dev_requirements', '').split()
readme = Path(__file__).parent/'README.md'

def shipped() -> tuple:
    "launch.SHIPPED, read from the module's source: importing the package would need its requirements at build time."
    tree = ast.parse((Path(__file__).parent/cfg['lib_path']/'launch.py').read_text(encoding='utf-8'))
    return next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == 'SHIPPED' for t in n.targets))

# What `fc_chatglm pack` puts beside the modules in a .fctor. The files at the project's root are the
# one source: every build copies them into the package (fc_chatglm/connector/), so that pack works
# from any install (nbs/08_launch.ipynb, "The .fctor package").
SHIPPED = shipped()

class BuildWithConnector(build_py):
    "build_py, plus a copy of the connector's files into the built package."
    def run(self):
        super().run()
        for f in SHIPPED:
            target = Path(self.build_lib)/cfg['lib_path']/'connector'/f
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(__file__).parent/f, target)

setuptools.setup(
    name=cfg['lib_name'], version=cfg['version'], description=cfg['description'],
    long_description=readme.read_text(encoding='utf-8') if readme.exists() else cfg['description'],
    long_description_content_type='text/markdown',
    author=cfg['author'], author_email=cfg['author_email'], license=lic[0],
    url=cfg['git_url'], keywords=cfg['keywords'],
    classifiers=['Development Status :: ' + statuses[int(cfg['status'])],
                 'Intended Audience :: ' + cfg['audience'].title(),
                 'License :: ' + lic[1], 'Natural Language :: ' + cfg['language'].title(),
                 'Operating System :: Microsoft :: Windows', 'Operating System :: POSIX :: Linux',
                 'Programming Language :: Python :: 3'],
    packages=setuptools.find_packages(include=['fc_chatglm', 'fc_chatglm.*']),
    include_package_data=True, python_requires='>=' + cfg['min_python'],
    install_requires=requirements,
    extras_require={'dev': dev_requirements, 'widget': ['ipywidgets>=8', 'markdown-it-py>=3', 'anywidget>=0.9'], 'quantize': ['bitsandbytes>=0.43']},
    entry_points={'console_scripts': cfg['console_scripts'].split(), 'nbdev': [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"]},
    cmdclass={'build_py': BuildWithConnector}, zip_safe=False)
